from __future__ import annotations

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from clothseg.database import Base


class SigningSecret(Base):
    """The key result links are signed with, in the database so that every API node
    sharing it signs and verifies the same links."""

    __tablename__ = "signing_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
