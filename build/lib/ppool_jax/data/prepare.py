"""CLI: convert an extracted dataset folder into TFDS ArrayRecord files.

  python -m ppool_jax.data.prepare --dataset cityscapes --manual_dir ~/data/cityscapes \
      --data_dir ~/tensorflow_datasets
"""

from absl import app, flags

flags.DEFINE_enum("dataset", None, ["voc_aug", "cityscapes", "ade20k"], "Dataset to prepare.")
flags.DEFINE_string("manual_dir", None, "The extracted dataset folder (see ppool_jax.data.folders).")
flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where TFDS writes the prepared data.")
flags.mark_flags_as_required(["dataset", "manual_dir"])
FLAGS = flags.FLAGS


def main(_):
  import os

  from ppool_jax.data.tfds_builders import prepare
  builder = prepare(FLAGS.dataset, os.path.expanduser(FLAGS.manual_dir),
                    os.path.expanduser(FLAGS.data_dir))
  for split, info in builder.info.splits.items():
    print(f"{FLAGS.dataset}/{split}: {info.num_examples} examples in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
