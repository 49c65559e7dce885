"""Model cards over REST: ``/api/v1/models/{name}/versions/{version}/card`` and ``.../evaluate``. Thin.

``GET .../card?format=json|md|html`` renders the card; ``PATCH .../card`` edits its free text;
``POST .../evaluate`` evaluates the version on the data in the body and stores the result the
card shows (metrics with bootstrap intervals, fairness per protected attribute).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Response, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from matih_lite.host import Host
from matih_lite.registry.cards import MAX_ROWS, ModelCards, table_from_json
from matih_lite.service.auth import Principal, principal

CardsDep = NamedDependency[ModelCards]
PrincipalDep = NamedDependency[Principal]
Version = Annotated[int, Parameter(ge=1, le=2**62)]
MEDIA = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}


def provide_cards(host: NamedDependency[Host]) -> ModelCards:
    return ModelCards(host)


DEPENDENCIES = {"cards": Provide(provide_cards, sync_to_thread=False),
                "principal": Provide(principal, sync_to_thread=False)}


class CardEdit(msgspec.Struct, forbid_unknown_fields=True):
    """Free-text fields; a field left out stays as it is, ``""`` clears it."""

    description: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    ethical_considerations: str | None = None


class EvaluateIn(msgspec.Struct, forbid_unknown_fields=True):
    X: list[Any] | dict[str, Any]
    """Rows (list of lists or of objects), ``{"columns": [...], "data": [[...]]}`` or ``{column: [values]}``."""
    y: list[Any]
    protected: dict[str, list[Any]] | list[str] | None = None
    """``{attribute: [group per row]}``, or names of columns of ``X``."""
    positive_label: Any = None
    task: Literal["classification", "regression"] | None = None
    n_resamples: int = 1000
    """Bootstrap resamples, 1 to 20,000."""
    seed: int = 0
    confidence: float = 0.95
    dataset: dict[str, str] | None = None
    """``{"name": ..., "uri": ...}`` describing the evaluation set, for the card."""


class CardController(Controller):
    path = "/api/v1/models/{name:str}/versions/{version:int}"
    tags = ["model cards"]
    dependencies = DEPENDENCIES

    @get("/card", sync_to_thread=True, summary="The version's model card as JSON, Markdown or HTML")
    def card(self, name: FromPath[str], version: FromPath[Version], cards: CardsDep, principal: PrincipalDep,
             format: FromQuery[Literal["json", "md", "html"]] = "json") -> Response[Any]:
        if format == "json":
            return Response(cards.card(principal, name, version), media_type=MEDIA["json"])
        return Response(cards.render(principal, name, version, format), media_type=MEDIA[format])

    @patch("/card", sync_to_thread=True, summary="Edit the card's free text (description, intended use, ...)")
    def edit(self, name: FromPath[str], version: FromPath[Version], data: JSONBody[CardEdit], cards: CardsDep,
             principal: PrincipalDep) -> dict[str, Any]:
        return cards.edit(principal, name, version, **msgspec.structs.asdict(data))

    @post("/evaluate", sync_to_thread=True, status_code=200, request_max_body_size=256 * 1024 * 1024,
          summary="Evaluate the version on labelled data: metrics with bootstrap CIs, fairness by group")
    def evaluate(self, name: FromPath[str], version: FromPath[Version], data: JSONBody[EvaluateIn], cards: CardsDep,
                 principal: PrincipalDep) -> dict[str, Any]:
        from matih_lite.errors import InvalidInput

        if len(data.y) > MAX_ROWS:
            raise InvalidInput(f"evaluation sets are limited to {MAX_ROWS} rows; got {len(data.y)}")
        X = table_from_json(data.X)
        return cards.evaluate(principal, name, version, X, data.y, protected=data.protected,
                              positive_label=data.positive_label, task=data.task, n_resamples=data.n_resamples,
                              seed=data.seed, confidence=data.confidence, dataset=data.dataset)


CONTROLLERS = [CardController]
