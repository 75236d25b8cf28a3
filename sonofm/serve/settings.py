"""Settings of `sonofm serve`: which models to load and how the HTTP service behaves.

One pydantic model, filled by the CLI flags (or by a caller of `create_app`), so the whole
service configuration is one validated, JSON-able object that can be logged at start-up.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeSettings(BaseModel):
    """Everything `create_app` needs (docs/design.md, "Serving")."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Dual-encoder model dir (or an ONNX export dir with --onnx).")
    vlm: str | None = Field(None, description="Generative VLM model dir: enables the draft report.")
    seg: str | None = Field(None, description="Segmentation task-model dir: enables the overlay.")
    index: str | None = Field(None, description="Case index dir from `sonofm index build`.")
    onnx: bool = Field(False, description="Run the image/text encoders on onnxruntime.")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest accepted upload (413 above).")
    token: str | None = Field(None, description="Bearer token required on /api/* (None: open).")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; [] = off.")
    batch_max: int = Field(16, ge=1, le=1024, description="Most images per model forward.")
    batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill up.")
    store_uploads: Path | None = Field(
        None, description="Directory to keep de-identified uploads in (None: never stored)."
    )
    default_k: int = Field(5, ge=1, le=50, description="Similar cases returned when `k` is not given.")
    max_k: int = Field(50, ge=1, description="Largest `k` a request may ask for.")
    device: str | None = Field(None, description="torch device (default: cuda when available).")
    threads: int | None = Field(None, ge=1, description="torch intra-op CPU threads (default: torch's).")
    thumbnails_inline: bool = Field(True, description="Similar-case thumbnails as data URIs in the JSON.")

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("token must not be empty (leave it unset to turn auth off)")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if o != "*" and not o.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"CORS origins must be '*' or start with http:// or https://, got {bad}")
        return v

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
