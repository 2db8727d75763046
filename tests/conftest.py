"""Shared fixtures: a tiny random model folder in the real layout (config.json, model.safetensors,
tokenizer files, vae/), built once per test session."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from omnigen.model import OmniGen, OmniGenConfig
from omnigen.weights import save_transformer

CORPUS = [
    "a red circle at the top left and a blue square on a white background",
    "make the red circle green", "remove the blue square", "put the object on a grey background",
    "according to the following examples, generate an output for the input. input: output:",
    "(((deformed))), blurry, over saturation, bad anatomy, disfigured, poorly drawn face, mutation",
]


# A byte-level BPE tokenizer of 300 tokens trained on CORPUS * 4 (omnigen.mini.tokenizer.train_tokenizer), kept as
# files so that the tests' model folder is made without the mini world.
TINY_TOKENIZER = Path(__file__).resolve().parent / "data" / "tiny-tokenizer"


def build_tiny_model_dir(root: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    from diffusers import AutoencoderKL

    root.mkdir(parents=True, exist_ok=True)
    for file in TINY_TOKENIZER.iterdir():
        shutil.copyfile(file, root / file.name)
    pad = json.loads((root / "tokenizer_config.json").read_text()).get("pad_token")
    torch.manual_seed(seed)
    config = OmniGenConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                           num_key_value_heads=4, intermediate_size=2 * hidden, vocab_size=320, pad_token_id=3,
                           pos_embed_max_size=32, native_image_size=64)
    model = OmniGen.from_config(config)
    with torch.no_grad():  # random everywhere: zero-initialised outputs would make every test trivially pass
        for p in model.parameters():
            p.normal_(0, 0.05)
    save_transformer(model, root)
    vae = AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64, scaling_factor=0.5)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    assert pad == "<|endoftext|>"
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-omnigen"))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir):
    from omnigen import OmniGenPipeline
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def one_torch_thread():
    """The models of these tests are small: one thread runs them fastest, and on a shared 2-core machine two
    threads spin-wait for each other (10-50x slower). Modules ask for it with pytest.mark.usefixtures."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def studio(tiny_pipe, tmp_path):
    """A studio on the tiny model, writing into tmp_path/outputs, and the current one for the page's handlers."""
    from app.engine import Studio, set_studio

    threads = torch.get_num_threads()  # the studio sets one thread for a small model: restored below
    made = Studio(tiny_pipe, tmp_path / "outputs")
    set_studio(made)
    yield made
    torch.set_num_threads(threads)
