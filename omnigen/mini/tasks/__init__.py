"""X2I-mini: procedural samples of every OmniGen task family in the miniature world.

Each family draws a random spec (scenes, figures, an edit, a transformation), words an instruction
from a pool of phrasings, and renders the input and output pictures from the spec. The spec is kept
in the sample (JSON-serialisable) so that the judge can re-render and check a generated image.

Held-out colour-shape pairs (HELDOUT_PAIRS) never appear in any picture of the "train" and "eval"
splits; the "heldout" split of text_to_image and edit makes samples whose output holds one of them. The
"heldout" split of caption holds phrasings instead: framings of a caption that no training caption uses.

- `sampling`: the families by name, `make_sample`, `generate`, `corpus`, `write_jsonl`.
- `specs`: the Sample, held-out pairs, random scenes/poses/garments, picture specs, `build_sample`.
- `wording`: the phrasings of objects, regions, scenes and garments.
- `generation`: text_to_image, edit, subject, tryon.
- `vision`: pose, depth and edges (conditioned), their extractions, segment, restore.
- `fewshot`: in-context examples of a transformation.
- `natural`: what people type and upload: captions of any detail, counts, edits of uploaded pictures.

Everything a caller needs is re-exported here: `from omnigen.mini.tasks import generate`.
"""

from .fewshot import FEWSHOT_LEADS, FEWSHOT_TRANSFORMS, fewshot_instruction, make_fewshot
from .generation import EDIT_OPERATIONS, make_edit, make_subject, make_text_to_image, make_tryon
from .natural import DEFAULT_FILL, FILLS, HELDOUT_FRAMES, NATURAL_FAMILIES, TRAIN_FRAMES, UPLOAD_EDITS, make_caption, make_count, make_upload_edit
from .sampling import (
    FAMILIES,
    FILLED_FAMILIES,
    HELDOUT_FAMILIES,
    SPLITS,
    SUB_TASKS,
    corpus,
    family_rng,
    generate,
    make_sample,
    write_jsonl,
)
from .specs import (
    ALL_PAIRS,
    HELDOUT_PAIRS,
    IMG1,
    IMG2,
    SEEN_PAIRS,
    Sample,
    TaskWeights,
    build_sample,
    figure_picture,
    garment_picture,
    placeholder,
    random_garment,
    random_object,
    random_pose,
    random_scene,
    scene_picture,
    skeleton_picture,
)
from .vision import (
    RESTORE_TASKS,
    make_depth,
    make_depth_extract,
    make_edges,
    make_edges_extract,
    make_pose,
    make_pose_extract,
    make_restore,
    make_segment,
)
from .wording import (
    garment_phrase,
    join_phrases,
    object_phrase,
    objects_phrase,
    refer,
    region_phrase,
    scene_description,
    with_article,
)
