from __future__ import annotations

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clothseg.database import Base


class TaskRecord(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    state: Mapped[int] = mapped_column(Integer, index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    # The job: exactly one of image_url / an uploaded input stored under inputs/<id>.
    image_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    class_type: Mapped[int] = mapped_column(Integer)
    output_type: Mapped[int] = mapped_column(Integer)
    quality: Mapped[int] = mapped_column(Integer)
    detail_mode: Mapped[int] = mapped_column(Integer)
    return_base64: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The claim of whoever works on the task now (a download or a worker): a token
    # that only its holder may finish the task with, and until when that holder's
    # heartbeat vouches it is alive.  A task whose lease has run out is recovered.
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    # Names of the stored results, e.g. "hair,face" and whether a ZIP exists.
    class_names: Mapped[str] = mapped_column(Text, default="")
    has_zip: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    processed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class IdempotencyRecord(Base):
    """An ``Idempotency-Key`` a key sent with a create request, and the task it made."""

    __tablename__ = "idempotency_keys"

    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the request's meaning (image bytes or URL, options): a reuse must match it.
    request_hash: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(36), index=True)
