"""The JSON shapes of `POST /api/analyze` (they document the API; responses are built as plain dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Score(BaseModel):
    tag: str
    label: str
    probability: float


class TopScore(Score):
    scores: list[Score]


class FindingOut(BaseModel):
    dimension: str = Field(description="'echo' or a descriptor dimension (shape, margin, ...)")
    tag: str
    label: str
    probability: float = Field(description="softmax over the positive vs negated prompt pair")


class CaseOut(BaseModel):
    id: str
    rank: int
    score: float = Field(description="cosine similarity of image embeddings")
    report: str
    region: str
    organ: str | None = None
    diagnosis: str | None = None
    view: str | None = None
    thumbnail: str | None = Field(None, description="JPEG data URI (when inline thumbnails are on)")
    thumbnail_url: str


class SegmentationOut(BaseModel):
    overlay: str = Field(description="PNG data URI: the label map blended over the image")
    area_fraction: dict[str, float]


class AnalyzeResponse(BaseModel):
    request_id: str
    input: dict[str, Any] = Field(description="kind, size, and for DICOM frames/de-identification facts")
    preview: str = Field(description="PNG data URI of the (de-identified) image the model saw")
    region: TopScore
    organ: TopScore
    attributes: dict[str, list[Score]] = Field(description="per dimension: softmax over its tags")
    findings: list[FindingOut]
    similar_cases: list[CaseOut] | None = Field(None, description="null when no index is loaded")
    report: str | None = Field(None, description="draft report; null when no VLM is loaded")
    report_check: dict[str, Any] | None = Field(
        None,
        description="the draft's confidence: mean_logprob, low_confidence (show a warning, not the "
        "text), reasons, findings (the predicted findings line the generator was prompted with, "
        "or null), draft (the model's own text when `report` is it grounded in the request's "
        "measurements, else null); null when no VLM is loaded",
    )
    answer: str | None = Field(None, description="VLM answer to `question`; null without VLM/question")
    answer_check: dict[str, Any] | None = Field(
        None,
        description="the answer's confidence as in report_check, plus answered_by (the source of a "
        "closed answer: the study's measurements, the guideline rules or the findings head; null when "
        "the language model answered) and draft (then the language model's own answer); null "
        "without VLM/question",
    )
    segmentation: SegmentationOut | None = Field(
        None, description="null when no segmentation model is loaded"
    )
    model: dict[str, Any]
    batch_size: int = Field(description="images in the model forward this request ran in")
    timing_ms: dict[str, float]
