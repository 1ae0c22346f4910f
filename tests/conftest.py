"""Test setup: offline tiktoken from ../shared/data/gpt2_bpe, the repo root on sys.path, CPU threads."""
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

# tiktoken looks up its BPE files under TIKTOKEN_CACHE_DIR by the sha1 of their URL (see ../shared/data/README.md)
_BPE_NAMES = {"vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
              "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"}
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED_DATA / "gpt2_bpe").is_dir():
    cache = ROOT / ".tiktoken_cache"
    cache.mkdir(exist_ok=True)
    for src, dst in _BPE_NAMES.items():
        if not (cache / dst).exists():
            shutil.copy(SHARED_DATA / "gpt2_bpe" / src, cache / dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(1)  # tiny models: one thread is faster and the results do not depend on the core count


@pytest.fixture
def shared_data():
    """Path to ../shared/data, or skip the test when this checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA
