"""Which native image a VM boots from, per credential and region."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from skyfleet.api.image import Image, ImageBuild, ImageSource, ImageStatus, Recipe
from skyfleet.reconcile.views import DeploymentView

__all__ = ["ImageError", "current_resolution", "effective_image", "image_uses", "select_source"]


class ImageError(ValueError):
    """The Image cannot be used: a parent is missing or parents form a cycle.

    ``reason`` is the Image's condition reason: ``ParentNotFound`` or ``InvalidImage``.
    """

    def __init__(self, message: str, reason: str = "InvalidImage") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EffectiveImage:
    """An Image with its parents folded in: own sources first, recipes parent-first."""

    name: str
    sources: tuple[ImageSource, ...]
    recipe: Recipe | None
    login_user: str | None
    # The named Image's own spec.build and status: a baked Image boots what its bakes made.
    build: ImageBuild | None = None
    status: ImageStatus | None = field(default=None, compare=False)
    # The native id per (credential, region) the Image's own loop resolved for its current
    # generation: what a new VM of a group booting this Image boots there (empty: not known yet).
    resolved: Mapping[tuple[str, str], str] = field(default_factory=lambda: MappingProxyType({}), compare=False)


def effective_image(name: str, lookup: Callable[[str], Image | None]) -> EffectiveImage:
    chain: list[Image] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None:
        if current in seen:
            raise ImageError(f"Image parents form a cycle: {' -> '.join([*seen, current])}")
        seen.add(current)
        image = lookup(current)
        if image is None:
            raise ImageError(
                f"Image {current!r} not found" + (f" (parent of {chain[-1].metadata.name!r})" if chain else ""),
                reason="ParentNotFound",
            )
        chain.append(image)
        current = image.spec.parent
    sources = tuple(s for img in chain for s in (img.spec.clouds or []))
    packages: list[str] = []
    files = []
    scripts: list[str] = []
    for img in reversed(chain):
        r = img.spec.recipe
        if r is None:
            continue
        packages += [p for p in r.packages or [] if p not in packages]
        files += r.files or []
        scripts += r.scripts or []
    recipe = (
        Recipe(packages=packages or None, files=files or None, scripts=scripts or None)
        if packages or files or scripts
        else None
    )
    login = next((img.spec.login_user for img in chain if img.spec.login_user), None)
    own = chain[0]
    return EffectiveImage(
        name, sources, recipe, login, build=own.spec.build, status=own.status, resolved=current_resolution(own)
    )


def current_resolution(image: Image) -> Mapping[tuple[str, str], str]:
    """The ids in ``status.resolved``, keyed by (credential, region), when the status was
    computed from the Image's current spec; empty while an edit has not been resolved yet."""
    status = image.status
    if status is None or status.observed_generation != image.metadata.generation:
        return MappingProxyType({})
    return MappingProxyType({(r.credential, r.region): r.id for r in status.resolved or []})


def select_source(
    sources: Iterable[ImageSource], *, credential: str, provider: str, region: str | None
) -> ImageSource | None:
    """The most specific entry: credential before provider, an exact region before any region.

    Among equally specific entries the first listed wins (a child Image's entries come first).
    """
    best: tuple[int, ImageSource] | None = None
    for s in sources:
        if s.credential is not None and s.credential != credential:
            continue
        if s.provider is not None and s.provider != provider:
            continue
        if s.region is not None and s.region != region:
            continue
        rank = (0 if s.credential else 2) + (0 if s.region else 1)
        if best is None or rank < best[0]:
            best = (rank, s)
    return best[1] if best else None


def image_uses(
    image: str, deployments: Iterable[DeploymentView], credential_regions: Mapping[str, str | None]
) -> list[tuple[str, str | None]]:
    """Every (credential, region) a Deployment places a group booting ``image`` on, sorted."""
    uses: set[tuple[str, str | None]] = set()
    for d in deployments:
        for g in d.groups:
            if g.image_ref != image:
                continue
            for credential, region in g.targets:
                uses.add((credential, region or credential_regions.get(credential)))
    return sorted(uses, key=lambda u: (u[0], u[1] or ""))
