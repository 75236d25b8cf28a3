"""Echocardiography simulator (region "heart"): one patient = one echo exam of several views at
end-diastole and end-systole, with chamber masks, landmarks, measurements read back from the masks
and guideline findings. Importing this package registers `simulate_heart` for region "heart"."""

from __future__ import annotations

from sonofm.sim.echo.exam import EchoExam, plan_exam, render_exam, simulate_heart
from sonofm.sim.echo.heart import Heart, sample_heart

__all__ = ["EchoExam", "Heart", "plan_exam", "render_exam", "sample_heart", "simulate_heart"]
