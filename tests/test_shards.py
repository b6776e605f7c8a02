"""Shard records round-trip exactly; make_dataset batches, filters, shards per worker."""
import json

import numpy as np
import pytest
import tensorflow as tf

from mammogan_tf.data.codec import PNG16_MAX, quantize16
from mammogan_tf.data.shards import ShardWriter, make_dataset, parse_example, serialize_patch
from mammogan_tf.errors import InputError
from mammogan_tf.manifest import write_json_atomic


def _patch(seed, size=16):
    return np.random.default_rng(seed).random((size, size)).astype(np.float32)


def _fields(i, lesion_type="mass"):
    return dict(label=1 if lesion_type == "mass" else 0, lesion_type=lesion_type, pathology="benign",
                patient_id=f"p{i // 2}", image_id=f"img{i}", kind="lesion", bbox=(2, 3, 10, 12),
                origin=(100, 200, 116, 216))


def test_record_round_trips_exactly():
    pixels = _patch(0)
    mask = pixels > 0.5
    record = serialize_patch(pixels, mask=mask, provenance={"seed": 3}, synthetic=True, **_fields(7))
    example = parse_example(tf.constant(record))
    image = example["image"].numpy()
    assert image.shape == (16, 16, 1) and image.dtype == np.float32
    assert image.min() >= -1 and image.max() <= 1
    restored = np.rint((image[..., 0] + 1) / 2 * PNG16_MAX).astype(np.uint16)
    np.testing.assert_array_equal(restored, quantize16(pixels))
    assert example["lesion_type"].numpy() == b"mass" and int(example["label"]) == 1
    assert example["patient_id"].numpy() == b"p3" and example["image_id"].numpy() == b"img7"
    np.testing.assert_array_equal(example["bbox"].numpy(), [2, 3, 10, 12])
    np.testing.assert_array_equal(example["origin"].numpy(), [100, 200, 116, 216])
    assert int(example["synthetic"]) == 1
    assert json.loads(example["provenance"].numpy()) == {"seed": 3}
    decoded_mask = tf.io.decode_png(example["mask"]).numpy()[..., 0] > 0
    np.testing.assert_array_equal(decoded_mask, mask)


@pytest.fixture
def shard_manifest(tmp_path):
    """12 train records over 3 shards (8 mass, 4 normal) and an empty val split."""
    with ShardWriter(tmp_path / "shards", "train", per_shard=4) as writer:
        for i in range(12):
            writer.write(serialize_patch(_patch(i), **_fields(i, "mass" if i % 3 else "normal")))
    files = [f"shards/{name}" for name in writer.files]
    write_json_atomic(tmp_path / "manifest.json", {
        "stage": "prepare", "splits": {"train": files, "val": []},
        "classes": ["normal", "mass", "calcification"], "patch_size": 16})
    return tmp_path / "manifest.json"


def test_shard_writer_rolls_files_atomically(shard_manifest):
    shards = sorted(p.name for p in (shard_manifest.parent / "shards").iterdir())
    assert shards == ["train-00000.tfrecord", "train-00001.tfrecord", "train-00002.tfrecord"]


def test_make_dataset_unshuffled_order_and_values(shard_manifest):
    batches = list(make_dataset(shard_manifest, "train", batch_size=5, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (12, 16, 16, 1) and labels.dtype == np.int32
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 8
    expected = {np.round(_patch(i).mean(), 3) for i in range(12)}
    got = {np.round(((im + 1) / 2).mean(), 3) for im in images}
    assert got == expected


def test_make_dataset_shuffle_is_seeded_and_filters(shard_manifest):
    def ids(seed):
        ds = make_dataset(shard_manifest, "train", batch_size=None, seed=seed, as_dict=True)
        return [ex["image_id"].numpy() for ex in ds]
    assert ids(1) == ids(1)
    assert sorted(ids(1)) == sorted(ids(2))
    masses = make_dataset(shard_manifest, "train", batch_size=100, shuffle=False, lesion_types=["mass"])
    assert set(next(iter(masses))[1].numpy().tolist()) == {1}


def test_make_dataset_per_worker_sharding(shard_manifest):
    seen = []
    for worker in range(3):
        context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=worker,
                                             num_replicas_in_sync=3)
        ds = make_dataset(shard_manifest, "train", batch_size=6, shuffle=False, as_dict=True,
                          input_context=context)
        batch = next(iter(ds))
        assert batch["image"].shape[0] == 2  # per-replica batch
        seen += [ex["image_id"].numpy() for ex in make_dataset(
            shard_manifest, "train", batch_size=None, shuffle=False, as_dict=True, input_context=context)]
    assert sorted(seen) == sorted(f"img{i}".encode() for i in range(12))


def test_make_dataset_errors_name_the_split(shard_manifest):
    with pytest.raises(InputError, match="no split 'test'"):
        make_dataset(shard_manifest, "test")
    with pytest.raises(InputError, match="holds no shards"):
        make_dataset(shard_manifest, "val")
    with pytest.raises(InputError, match="unknown lesion types"):
        make_dataset(shard_manifest, "train", lesion_types=["tumour"])
