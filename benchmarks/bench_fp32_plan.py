"""The fp32 modules of composite models read from text vs built: every installed transformers model type whose
default config has sub-configs, each of its classes in the auto mappings.

`python -m benchmarks.bench_fp32_plan`: for each class, `fp32_modules_plan` (the modeling code's text) and the class
built on the meta device from the type's default config (what `kept_fp32_at_load` does when the text does not
answer); prints the classes read from text, equal to the built ones, different (must be none), and left to the
build, with the median time of each way. A class the default config cannot build is counted apart.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings


def main() -> int:
    import torch
    import transformers
    from transformers.models.auto import configuration_auto, modeling_auto

    from weightdoctor.modeling_source import config_model_types, fp32_modules_plan

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    mappings = [name for name in dir(modeling_auto) if name.startswith("MODEL") and name.endswith("MAPPING_NAMES")]
    counts = {"equal": 0, "different": 0, "left to the build": 0, "not buildable": 0}
    text_s: list[float] = []
    build_s: list[float] = []
    for model_type in sorted(configuration_auto.CONFIG_MAPPING_NAMES):
        try:
            config_class = configuration_auto.CONFIG_MAPPING[model_type]
            default = config_class().to_dict()
        except Exception:  # noqa: BLE001 - a config that needs arguments
            continue
        if len(config_model_types(default)) <= 1:
            continue
        names = sorted({n for m in mappings if isinstance(n := getattr(modeling_auto, m).get(model_type), str)})
        for name in names:
            cls = getattr(transformers, name, None)
            if cls is None:
                continue
            config = {**default, "architectures": [name]}
            start = time.perf_counter()
            read = fp32_modules_plan(config)
            text_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            try:
                with torch.device("meta"):
                    model = cls._from_config(config_class.from_dict(config))
            except Exception:  # noqa: BLE001 - a default config some classes cannot build
                counts["not buildable"] += 1
                continue
            build_s.append(time.perf_counter() - start)
            built = (tuple(sorted(model._keep_in_fp32_modules or ())),
                     tuple(sorted(model._keep_in_fp32_modules_strict or ())))
            if read is None:
                counts["left to the build"] += 1
            elif read == built:
                counts["equal"] += 1
            else:
                counts["different"] += 1
                print(f"DIFFERENT {model_type} {name}: read {read}, built {built}")
    print(", ".join(f"{key} {value}" for key, value in counts.items()))
    print(f"median per class: text {statistics.median(text_s) * 1000:.2f} ms, "
          f"build {statistics.median(build_s) * 1000:.0f} ms (transformers already imported)")
    return 1 if counts["different"] else 0


if __name__ == "__main__":
    sys.exit(main())
