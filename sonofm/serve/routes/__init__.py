"""The routes of `sonofm serve`, one APIRouter per concern; `sonofm.serve.app.create_app` wires them.

- `service`   GET /health, /ready, /api/info: liveness, readiness, features and limits
- `analysis`  POST /api/analyze: findings, similar cases, draft report, overlay for one upload
- `cases`     GET /api/thumb/{case_id}: thumbnails of similar (indexed) cases
- `page`      GET / (the web page) and its static files
- `docs`      GET /docs from local Swagger UI assets (no CDN)
"""
