"""One error line for the operator when a provider says the configured model does not exist."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class ModelGoneReporter:
    """Logs one error line for the operator the first time the provider says the configured model
    does not exist (404), not one per request; a later success re-arms it."""

    def __init__(self, provider: str, model: str, *, event: str, fix: str) -> None:
        self._provider = provider
        self._model = model
        self._event = event
        self._fix = fix
        self._reported = False

    def gone(self, detail: str) -> None:
        if self._reported:
            log.info("model_still_unavailable", provider=self._provider, model=self._model)
            return
        self._reported = True
        log.error(
            self._event,
            provider=self._provider,
            model=self._model,
            detail=detail[:300],
            fix=self._fix,
        )

    def served(self) -> None:
        self._reported = False
