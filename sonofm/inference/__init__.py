"""Inference utilities below every job: batched, cached embedding (`embed`) and the numeric
precision a model runs at (`precision`). Eval, serve, the VLM, fine-tuning and the training loop
use them; nothing here imports a job.
"""
