"""MLflow ``run_context_provider``: tags runs with the investigated model's identity."""
from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider


class DomainFinderRunContextProvider(RunContextProvider):
    def in_context(self) -> bool:
        from plugin.investigate import active_identity

        return active_identity() is not None

    def tags(self) -> dict[str, str]:
        from plugin.investigate import active_identity

        identity = active_identity()
        return identity.tags() if identity else {}
