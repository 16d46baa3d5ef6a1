"""MLflow ``run_context_provider``: tags runs with the investigated model's identity."""
from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider

from plugin.tracking import active_identity


class DomainFinderRunContextProvider(RunContextProvider):
    def in_context(self) -> bool:
        return active_identity() is not None

    def tags(self) -> dict[str, str]:
        identity = active_identity()
        return identity.tags() if identity else {}
