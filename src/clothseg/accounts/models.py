from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clothseg.database import Base


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the key; the key itself is shown once, at creation, and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(12))  # first characters, to tell keys apart
    name: Mapped[str] = mapped_column(String(100), default="")
    credits: Mapped[int] = mapped_column(Integer, default=0)
    # Credits held by tasks not finished yet: a key cannot start more tasks than it can pay for.
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    qps: Mapped[float] = mapped_column(Float, default=2.0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
