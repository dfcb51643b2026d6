"""The model: load a local HF folder (with or without hooks), its head geometry, fingerprint,
where each head lives in the HF weights, and the head-output intervention site."""

from spt_interp.common.families import FAMILIES, Family, family_of
from spt_interp.model.architecture import (
    COMPONENTS,
    HeadSlice,
    check_layout,
    head_slices,
    layout_of,
    out_projection_name,
    z_hook_name,
)
from spt_interp.model.devices import DTYPES, resolve_device, resolve_dtype
from spt_interp.model.dispatch import DEVICE_MAPS, DeviceMapRequest, resolve_device_map
from spt_interp.model.folder import (
    check_architecture,
    check_model_folder,
    supported_architectures,
    weight_files,
    weights_hash,
)
from spt_interp.model.geometry import HeadGeometry, compute_fingerprint, geometry_from_config
from spt_interp.model.hf_internals import check_transformers_version
from spt_interp.model.interventions import HeadOutputSite
from spt_interp.model.loading import (
    HookedModel,
    end_logits,
    load_base,
    load_model,
    load_tokenizer,
    read_signature,
    wrap_model,
)

# Every stage that runs a model imports this package: an unsupported transformers stops here,
# in one line, rather than deep inside the first forward.
check_transformers_version()

__all__ = [
    "COMPONENTS",
    "DTYPES",
    "DEVICE_MAPS",
    "DeviceMapRequest",
    "HeadGeometry",
    "HeadOutputSite",
    "HeadSlice",
    "HookedModel",
    "check_architecture",
    "check_model_folder",
    "compute_fingerprint",
    "end_logits",
    "geometry_from_config",
    "head_slices",
    "check_layout",
    "layout_of",
    "FAMILIES",
    "Family",
    "family_of",
    "load_base",
    "load_model",
    "wrap_model",
    "load_tokenizer",
    "out_projection_name",
    "read_signature",
    "resolve_device",
    "resolve_device_map",
    "resolve_dtype",
    "supported_architectures",
    "weight_files",
    "weights_hash",
    "z_hook_name",
]
