"""Every hook a cropseg plugin can implement, typed and documented.

A plugin is a module (or object) with functions decorated by :data:`cropseg.hookimpl`, announced in its
distribution's ``[project.entry-points.cropseg]`` table. Built-in plugins use the same entry-point group.

Contribution hooks receive a ``register(name, factory)`` callback. ``factory(**options)`` is called with
the options from the stage's Hydra config (everything but ``name``) and must return an object
implementing the stage's interface from :mod:`cropseg.types`:

========================  ==========================  =====================================================
hook                      factory returns             interface
========================  ==========================  =====================================================
cropseg_register_sources  a scene source              :class:`cropseg.types.Source`
cropseg_register_labelers a labeler                   :class:`cropseg.types.Labeler`
cropseg_register_features a feature extractor         :class:`cropseg.types.Features`
cropseg_register_classifiers a pixel classifier       :class:`cropseg.types.Classifier`
cropseg_register_patch_models a patch model        :class:`cropseg.types.PatchModel`
cropseg_register_postprocessors a mask filter or      :class:`cropseg.types.MaskFilter` /
                          a vectorizer                :class:`cropseg.types.Vectorizer`
========================  ==========================  =====================================================

Patch models share the ``classifier`` stage with pixel classifiers (``cropseg classifier=unet``, the
``classifier`` config group, one namespace of names); the pipeline runs each kind its own way.

Registering a name twice for the same stage raises :class:`cropseg.errors.DuplicatePluginError`.

Besides the contribution hooks, :func:`cropseg_config_dirs` lets a distribution ship the Hydra configs of
its plugins (``classifier/<name>.yaml``...), so ``cropseg classifier=<name>`` works once it is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "cropseg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``register(name, factory)``: adds a named factory to a stage's registry.
Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def cropseg_register_sources(register: Register) -> None:
    """Register scene sources.

    A source's ``load(workdir)`` returns a :class:`cropseg.types.SceneSet`: the training scene and the
    held-out test scene, each a file-backed 4-band reflectance scene with its valid-data mask, CRS and
    transform, provenance metadata and ground truth. Sources that generate data set ``synthetic = True``.
    """


@hookspec
def cropseg_register_labelers(register: Register) -> None:
    """Register labelers: ground truth -> crop (1) / non-crop (0) / ignore (255) raster on a scene's grid.

    Pixels outside the scene's valid data (footprint, AOI, unusable data) must be *ignore*.
    """


@hookspec
def cropseg_register_features(register: Register) -> None:
    """Register feature extractors: reflectance block ``(bands, h, w)`` -> named features ``(f, h, w)``."""


@hookspec
def cropseg_register_classifiers(register: Register) -> None:
    """Register pixel classifiers: ``fit(X, y, groups)`` on ``(n, f)`` arrays, ``predict(X)`` -> 0/1."""


@hookspec
def cropseg_register_patch_models(register: Register) -> None:
    """Register patch models (:class:`cropseg.types.PatchModel`): models that see neighbourhoods.

    They are selected like pixel classifiers (``classifier=<name>``, config ``classifier/<name>.yaml``) and
    share their namespace of names. The framework draws training patches from the training scene
    (seeded, stratified, capped; ``train.patches`` in the run config), holds out whole spatial blocks of
    the training scene for validation, calls ``fit_patches``, and predicts scenes block by block with the
    model's ``halo`` through the block executor; the fitted model is logged as the run's pyfunc model.
    Test a patch model with :class:`cropseg.conformance.PatchModelConformance`.
    """


@hookspec
def cropseg_register_postprocessors(register: Register) -> None:
    """Register postprocessors: mask filters (mask -> cleaner mask, applied block-wise with a halo) and
    vectorizers (mask GeoTIFF -> polygons GeoJSON with areas)."""


@hookspec
def cropseg_config_dirs() -> list[str]:
    """Directories of Hydra configs this plugin ships, so its options are selectable by name.

    Each directory holds ``<group>/<option>.yaml`` files, e.g. ``classifier/nearest_centroid.yaml`` (whose
    ``name`` key names the registered factory) makes ``cropseg classifier=nearest_centroid`` work; the
    group may be any of cropseg's config groups (``source``, ``labeler``, ``features``, ``classifier``,
    ``postprocessor``, ``experiment``) or nested (``a/b/option.yaml`` is group ``a/b``). A file's
    ``# @package`` header is honoured (default: the group, like the files in cropseg's own ``conf/``).

    cropseg stores every file in Hydra's ConfigStore before composing (:func:`cropseg.config.register_configs`).
    An option that cropseg's own ``conf/`` (or an earlier plugin) already provides is skipped with a warning.
    Ship the files as package data and return absolute paths, e.g.
    ``[str(importlib.resources.files(__package__) / "conf")]``.
    """
