"""CLI: convert an extracted dataset folder into TFDS ArrayRecord files.

  python -m ppool_jax.data.prepare --dataset cityscapes --manual_dir ~/data/cityscapes \
      --data_dir ~/tensorflow_datasets
"""

from absl import flags

from ppool_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when the module runs, so importing it registers none."""
  flags.DEFINE_enum("dataset", None, ["voc_aug", "cityscapes", "ade20k"], "Dataset to prepare.")
  flags.DEFINE_string("manual_dir", None,
                      "The extracted dataset folder (see ppool_jax.data.folders).")
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where TFDS writes the prepared data.")
  flags.mark_flags_as_required(["dataset", "manual_dir"])


def main(_):
  import os

  from ppool_jax.data.tfds_builders import prepare
  builder = prepare(FLAGS.dataset, os.path.expanduser(FLAGS.manual_dir),
                    os.path.expanduser(FLAGS.data_dir))
  for split, info in builder.info.splits.items():
    print(f"{FLAGS.dataset}/{split}: {info.num_examples} examples in {builder.data_dir}")


if __name__ == "__main__":  # errors: one line, exit status 2, --verbose (ppool_jax.cli)
  cli.run(main, command="data.prepare", define_flags=define_flags)
