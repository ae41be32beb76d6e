"""t5mtl: multi-task text-to-text learning on JAX."""
import setuptools

# Ranges resolve together on Python 3.11 and 3.12 (checked with a fresh venv);
# the lower bound is the version the test suite runs against.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorstore>=0.1.86,<0.2",
    # orbax deletes gs:// checkpoint steps (keep-N, torn saves) through it
    "google-cloud-storage>=3.17.1,<4",
    "msgpack>=1.2.4,<2",
    "seqio==0.0.20",
    "tensorflow>=2.21.0,<2.22",
    "tensorflow-text>=2.21.1,<2.22",
    "gin-config>=0.5.0,<0.6",
    "sentencepiece>=0.2.3,<0.3",
    # WordPiece vocabularies (t5mtl/data/wordpiece.py): the Python path
    "tokenizers==0.23.3",
    "clu==0.0.12",
    "tensorboard>=2.21.0,<2.22",
    "safetensors>=0.8.0,<0.9",
    "numpy>=2.4,<3",
    "tqdm>=4.70,<5",
    "sacrebleu>=2.6.0,<3",
    "rouge-score==0.1.2",
    # passage indexes for retrieval (t5mtl/retrieval/index.py)
    "faiss-cpu==1.15.1",
    # image data that ships in a package (load_digits) and CLIP's linear
    # probe (LogisticRegression): t5mtl/data/vision_data.py, infer/clip_eval.py
    "scikit-learn==1.9.1",
]

TEST_REQUIRES = [
    "pytest>=9.2.0,<10",
    # the README's test command runs the suite in two processes (-n 2)
    "pytest-xdist==3.8.0",
    "transformers==5.24.0",
    "torch==2.13.0",
    # notebooks/quickstart.ipynb, executed by tests/test_notebook.py
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    "matplotlib==3.11.2",
    # a local GCS server for the gs:// tests (tests/cloud), and etils.epath's
    # gs:// client there (TensorFlow's GCS client has no endpoint setting)
    "gcp-storage-emulator==2026.7.19",
    "gcsfs==2026.10.1",
    # `t5mtl compile --topology` (t5mtl/train/aot.py): libtpu's compiler builds
    # TPU programs on a CPU host; the version jax 0.10.2's "tpu" extra names
    "libtpu==0.0.42.1",
]

# `pip install -e ".[compile]"`: size runs for TPU slices from any host.
COMPILE_REQUIRES = ["libtpu==0.0.42.1"]

setuptools.setup(
    name="t5mtl",
    version="0.1.0",
    description="Multi-task text-to-text pretraining and finetuning on JAX",
    # The package root is the checkout root, said explicitly: then
    # `pip install -e .` puts the checkout on sys.path (a .pth path entry)
    # instead of setuptools' flat-layout import hook, which Python consults
    # only after every sys.path entry. With the hook, a checkout directory
    # named t5mtl seen from its parent directory (a script or notebook there,
    # `python -c`) became a namespace package `t5mtl` that hid the real one
    # ("module 't5mtl' has no attribute 'load'"); a path entry's regular
    # package wins over it. tests/test_checkout_shadowing.py.
    package_dir={"": "."},
    packages=setuptools.find_packages(include=["t5mtl", "t5mtl.*"]),
    python_requires=">=3.11,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "compile": COMPILE_REQUIRES},
    entry_points={"console_scripts": ["t5mtl=t5mtl.cli:main"]},
    include_package_data=True,
    # the shipped WordPiece vocabulary ("wordpiece_en", t5mtl/data/vocab.py)
    package_data={"t5mtl.data": ["vocabs/*.txt"]},
)
