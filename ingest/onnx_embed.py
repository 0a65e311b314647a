"""The packaged MiniLM on ONNX Runtime, fp32 or int8, exported from the packaged torch weights on first use.

The export runs offline, once per machine and model, under a file lock and written atomically, into a cache
folder outside the repo; nothing is downloaded. Tokens, truncation and mean pooling are the torch path's.
Texts run in batches of one token length, so nothing is padded and the graphs take no attention mask.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from indexes.registry import EmbeddingIdentity
from ingest.embed import MINILM, ModelUnavailable, _resolve_local, canonical_model, fixed_tokenizer

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

Runtime = Literal["torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
DEFAULT_CACHE = Path("~/.cache/ragsvc/onnx")
# Token ids kept from counting, for embedding those texts without tokenising them again: the chunker counts
# about 6 texts per chunk, and two batches of ingestion's ~1,024 chunks are in flight (ids of at most 256
# tokens: 16 MB at worst, about 7 MB for the Aalto docs' chunks).
_COUNTED_TEXTS = 16384
# Part of the cache key: a changed export or quantisation recipe never reuses an old file.
RECIPE = "onnx-fused-unmasked-2/int8-per-channel-weights-per-token-activations-mha-2-layernorm-fastgelu-5"
# A batch holds texts of one token length, at most this many tokens in all (at least one text).
_BATCH_TOKENS = 8192
_OUTPUT = "last_hidden_state"


def split_runtime(model: str) -> tuple[str, Runtime]:
    """'sentence-transformers/all-MiniLM-L6-v2#onnx-int8' -> the model and its runtime ('torch' if none)."""
    base, _, runtime = model.partition("#")
    if runtime and runtime not in RUNTIMES:
        raise ModelUnavailable(f"unknown embedding runtime {runtime!r} in {model!r}: use one of {RUNTIMES}")
    return base, runtime or "torch"  # type: ignore[return-value]


def with_runtime(model: str, runtime: Runtime) -> str:
    """The model id a collection records: the runtime is part of it unless it is torch."""
    return canonical_model(f"{split_runtime(model)[0]}#{runtime}")


@dataclass(frozen=True)
class ExportedModel:
    fp32: Path
    int8: Path


def _fingerprint(model_dir: Path) -> str:
    """The source weights' and configs' contents and the recipe: a changed package means a new export."""
    digest = hashlib.sha256(RECIPE.encode())
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".txt", ".safetensors", ".bin"}:
            digest.update(path.relative_to(model_dir).as_posix().encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12]


def export_model(model_dir: Path, cache_dir: Path = DEFAULT_CACHE) -> ExportedModel:
    """The fp32 and int8 ONNX files of a sentence-transformers folder, exported now if not cached yet."""
    from filelock import FileLock

    target = cache_dir.expanduser() / f"{model_dir.name}-{_fingerprint(model_dir)}"
    exported = ExportedModel(fp32=target / "model.onnx", int8=target / "model-int8.onnx")
    if exported.fp32.exists() and exported.int8.exists():
        return exported
    target.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once: one exports, the other waits for the lock and then finds the files.
    with FileLock(str(target / "export.lock")):
        if not exported.fp32.exists():
            _write_atomically(exported.fp32, lambda tmp: _export_fp32(model_dir, tmp))
        if not exported.int8.exists():
            _write_atomically(exported.int8, lambda tmp: _quantize(exported.fp32, tmp))
    return exported


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".onnx")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(model_dir: Path, out: Path) -> None:
    """torch.onnx.export of the transformer, then ONNX Runtime's BERT fusions (embeddings + layer norm,
    attention, skip layer norm, bias GELU): the same function, fewer and faster kernels."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    # Eager attention exports the plain pattern that ONNX Runtime fuses into one Attention op (SDPA's does not).
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = torch.ones(2, 16, dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    raw = out.with_name(out.stem + "-unfused.onnx")
    try:
        # The tracer warns about Python-side shape checks; the fused graph replaces that mask code anyway.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(),
                (sample, sample, torch.zeros_like(sample)),
                str(raw),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=[_OUTPUT],
                dynamic_axes={
                    name: axes for name in ("input_ids", "attention_mask", "token_type_ids", _OUTPUT)
                },
                opset_version=17,
                dynamo=False,
            )
        fused = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=0,
        )
        _drop_attention_mask(fused.model.graph)
        fused.save_model_to_file(str(out))
    finally:
        raw.unlink(missing_ok=True)


def _drop_attention_mask(graph: onnx.GraphProto) -> None:
    """The fused graph without its `attention_mask` input: the embedder never pads (every batch holds texts
    of one token length), and unmasked attention takes ONNX Runtime's flash path. Measured on the Aalto
    chunks, one thread on AVX2: 4,060 tokens/s against 3,880 with the mask on the same batches, 3,680 in
    length-sorted padded batches of 32."""
    for node in graph.node:
        if node.op_type == "Attention":
            del node.input[3:]  # mask_index
        elif node.op_type == "EmbedLayerNormalization":
            del node.input[7:]  # the mask (its mask_index output, now read by nothing, stays in the schema)
    cast = [n for n in graph.node if n.op_type == "Cast" and n.input[0] == "attention_mask"]
    for node in cast:
        graph.node.remove(node)
    (mask,) = [i for i in graph.input if i.name == "attention_mask"]
    graph.input.remove(mask)
    read = {name for node in graph.node for name in node.input}
    if "attention_mask" in read or any(output in read for node in cast for output in node.output):
        raise RuntimeError("the exported graph still reads the attention mask somewhere")


def _quantize(fp32: Path, out: Path) -> None:
    """int8 weights per output channel and int8 activations per token, in every MatMul with constant weights.

    ONNX Runtime's dynamic quantisation scales activations per tensor, that is per batch: a text's vector then
    depended on the texts and padding it was batched with (cosine down to 0.973 between the same chunk alone
    and in a batch of 32), and a question (embedded alone) did not go through the chunks' function. Here
    each token's activations get their own scale, so a vector depends on its own text only.

    Measured on 600 Aalto chunks (cosine to torch fp32, mean / 1st percentile / min): per-tensor activations
    with layer 0's FFN output in fp32 0.995 / 0.989 / 0.976; per token, every MatMul int8, 0.998 / 0.995 /
    0.991, at about 90% of the per-tensor rate (tokens per CPU-second; 2.8x torch fp32).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32))
    _unfuse_attention(model.graph)
    quantize_dynamic(
        model,
        str(out),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        # The fused ops come from ONNX Runtime's own domain, where shape inference gives no types.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    quantized = onnx.load(str(out))
    _approximate_gelu(quantized.graph)
    _quantize_activations_per_token(quantized.graph)
    _split_skip_layer_norms(quantized.graph)
    onnx.save(quantized, str(out))


def _unfuse_attention(graph: onnx.GraphProto) -> None:
    """Each fused Attention (its quantised form takes one activation scale per tensor) becomes three
    projections, which the quantiser turns into per-channel int8 MatMuls, and a MultiHeadAttention."""
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "Attention":
            nodes.append(node)
            continue
        hidden_states, qkv_weight, qkv_bias = node.input[:3]
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        qkv = numpy_helper.to_array(weights[qkv_weight])
        width = qkv.shape[1] // 3
        for part, name in enumerate("qkv"):
            projection = f"{node.name}_{name}"
            graph.initializer.append(
                numpy_helper.from_array(
                    qkv[:, part * width : (part + 1) * width].copy(), f"{projection}_weight"
                )
            )
            nodes.append(
                helper.make_node(
                    "MatMul",
                    [hidden_states, f"{projection}_weight"],
                    [projection],
                    name=f"{projection}/MatMul",
                )
            )
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [f"{node.name}_q", f"{node.name}_k", f"{node.name}_v", qkv_bias],
                list(node.output),
                name=f"{node.name}_mha",
                domain="com.microsoft",
                num_heads=heads,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    kept = {i for node in graph.node for i in node.input}
    for unused in [i for i in graph.initializer if i.name not in kept]:
        graph.initializer.remove(unused)


def _quantize_activations_per_token(graph: onnx.GraphProto) -> None:
    """Rewrites what quantize_dynamic made of each MatMul, DynamicQuantizeLinear (one scale and zero point
    per tensor) + MatMulInteger + Cast + Mul(activation scale x weight scales), into: the activations as
    rows of [tokens, features], each quantised symmetrically on its own (scale max|x|/127, zero point 128,
    ONNX Runtime's fast uint8 x int8 kernels; MatMulInteger's CPU kernel takes one zero point per tensor
    only), and MatMulIntegerToFloat with the per-row scale, back in the input's shape."""
    from onnx import helper, numpy_helper

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    weights = {i.name: i for i in graph.initializer}
    constants = [
        # GELU's output is never below -0.17005 (tanh form; -0.16997 exact): its largest magnitude per token
        # is its maximum or 0.171, which spares a ReduceMin over the widest activations (1,536 per token).
        numpy_helper.from_array(np.array(0.171, np.float32), "per_token/gelu_floor"),
        numpy_helper.from_array(np.array(1 / 127, np.float32), "per_token/inv127"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "per_token/floor"),
        numpy_helper.from_array(np.array(128, np.uint8), "per_token/zero_point"),
        numpy_helper.from_array(np.array([1], np.int64), "per_token/axis1"),
    ]
    # Nodes are keyed by their first output: some (the input casts) have no name.
    replaced: dict[str, list[onnx.NodeProto]] = {}
    dropped: set[str] = set()
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        x, (quantized, scale, _) = node.input[0], node.output
        p = node.name
        matmuls = consumers[quantized]
        if any(m.op_type != "MatMulInteger" for m in matmuls):
            raise RuntimeError(f"{p}: expected only MatMulInteger to read {quantized}")
        features = weights[matmuls[0].input[1]].dims[0]
        constants.append(numpy_helper.from_array(np.array([-1, features], np.int64), f"{p}/rows_shape"))
        if made_by.get(x) == "FastGelu":  # _approximate_gelu has replaced every BiasGelu
            largest = [
                helper.make_node("Max", [f"{p}/max", "per_token/gelu_floor"], [f"{p}/abs_max"]),
            ]
        else:
            largest = [
                helper.make_node("ReduceMin", [f"{p}/rows"], [f"{p}/min"], axes=[1], keepdims=0),
                helper.make_node("Neg", [f"{p}/min"], [f"{p}/neg_min"]),
                helper.make_node("Max", [f"{p}/max", f"{p}/neg_min", "per_token/floor"], [f"{p}/abs_max"]),
            ]
        replaced[node.output[0]] = [
            helper.make_node("Reshape", [x, f"{p}/rows_shape"], [f"{p}/rows"]),
            helper.make_node("ReduceMax", [f"{p}/rows"], [f"{p}/max"], axes=[1], keepdims=0),
            *largest,
            helper.make_node("Mul", [f"{p}/abs_max", "per_token/inv127"], [f"{p}/row_scale"]),
            helper.make_node("Shape", [f"{p}/row_scale"], [f"{p}/row_count"]),
            helper.make_node("Expand", ["per_token/zero_point", f"{p}/row_count"], [f"{p}/row_zero_point"]),
            helper.make_node(
                "QuantizeLinear", [f"{p}/rows", f"{p}/row_scale", f"{p}/row_zero_point"], [quantized], axis=0
            ),
            helper.make_node("Unsqueeze", [f"{p}/row_scale", "per_token/axis1"], [f"{p}/row_scale_column"]),
            helper.make_node("Shape", [x], [f"{p}/lead_shape"], end=-1),
        ]
        for matmul in matmuls:
            (cast,) = consumers[matmul.output[0]]
            (dequantize,) = consumers[cast.output[0]]
            (scales,) = [c for c in consumers[scale] if c.output[0] in dequantize.input]
            weight_scale = next(i for i in scales.input if i != scale)
            m = matmul.name
            outputs = weights[matmul.input[1]].dims[1]
            constants.append(numpy_helper.from_array(np.array([outputs], np.int64), f"{m}/outputs"))
            replaced[matmul.output[0]] = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [
                        quantized,
                        matmul.input[1],
                        f"{p}/row_scale_column",
                        weight_scale,
                        "per_token/zero_point",
                    ]
                    + list(matmul.input[3:4]),
                    [f"{m}/rows_out"],
                    name=m,
                    domain="com.microsoft",
                ),
                helper.make_node("Concat", [f"{p}/lead_shape", f"{m}/outputs"], [f"{m}/shape"], axis=0),
                helper.make_node("Reshape", [f"{m}/rows_out", f"{m}/shape"], list(dequantize.output)),
            ]
            dropped |= {cast.output[0], dequantize.output[0], scales.output[0]}
    nodes = [
        new
        for node in graph.node
        if node.output[0] not in dropped
        for new in replaced.get(node.output[0], [node])
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)


def _approximate_gelu(graph: onnx.GraphProto) -> None:
    """BiasGelu (erf) becomes FastGelu (the tanh form, with the same bias input): they differ by under 0.0005
    where int8 steps are about 0.04, and FastGelu's kernel is faster. Measured on 672 Aalto chunks: 1.9%
    more tokens per second, cosine to fp32 mean 0.99805 either way, min 0.99626 against 0.99645."""
    for node in graph.node:
        if node.op_type == "BiasGelu":
            node.op_type = "FastGelu"


def _split_skip_layer_norms(graph: onnx.GraphProto) -> None:
    """Each fused SkipLayerNormalization, LayerNorm(x + skip + bias), becomes two Adds and a standard
    LayerNormalization: the same function, and on ONNX Runtime 1.32's CPU kernels 4x faster at a batch of
    32 x 150 tokens (4.6 ms against 1.1 ms), which is 11% more tokens per second through the int8 model.
    The fp32 graph is left fused: its session fuses the pattern back anyway."""
    from onnx import helper

    nodes = []
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization":
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = node.input
        epsilon = next(a.f for a in node.attribute if a.name == "epsilon")
        (out,) = node.output
        nodes += [
            helper.make_node("Add", [x, bias], [f"{out}/biased"]),
            helper.make_node("Add", [f"{out}/biased", skip], [f"{out}/sum"]),
            helper.make_node(
                "LayerNormalization", [f"{out}/sum", gamma, beta], [out], axis=-1, epsilon=epsilon
            ),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


@lru_cache(maxsize=4)
def _session(path: str) -> ort.InferenceSession:
    """A single-threaded CPU session with every graph optimisation. Threads share it: each `run` call is
    independent, and ONNX Runtime releases the GIL while it computes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def _batch_runner() -> ThreadPoolExecutor:
    """Threads that embed whole batches at once, one per CPU this process may run on, shared by every ONNX
    embedder in the process. Batches side by side on single-threaded sessions outran one session splitting
    each batch over all cores: on 2 AVX2 cores, 7,070-7,230 tokens/s against 6,360-6,420 (idle threads
    spinning) and 5,440-5,860 (sleeping); ONNX Runtime's intra-op threads wait on each other at every
    small op of a 6-layer model."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=usable, thread_name_prefix="ragsvc-embed")


def onnx_embedder(model: str = MINILM, runtime: Runtime = "onnx-int8") -> OnnxEmbedder:
    """One loaded session of each model and runtime per process."""
    if runtime not in ("onnx", "onnx-int8"):
        raise ModelUnavailable(f"runtime {runtime!r} is not an ONNX Runtime one")
    return OnnxEmbedder(model, quantized=runtime == "onnx-int8")


class OnnxEmbedder:
    """A sentence-transformers model (BERT-style encoder, mean pooling) on ONNX Runtime on this machine's CPU.

    Its `model` carries the runtime ('...#onnx' or '...#onnx-int8'), so its vectors land in indexes of
    their own: a collection keeps the runtime it was built with.
    """

    provider = "local"

    def __init__(
        self,
        model: str = MINILM,
        *,
        quantized: bool = True,
        cache_dir: Path = DEFAULT_CACHE,
        batch_tokens: int = _BATCH_TOKENS,
    ) -> None:
        from transformers import AutoTokenizer

        base = canonical_model(split_runtime(model)[0])
        self.runtime: Runtime = "onnx-int8" if quantized else "onnx"
        self.model = with_runtime(base, self.runtime)
        self.batch_tokens = batch_tokens
        model_dir = _resolve_local(base)
        try:
            modules = json.loads((model_dir / "modules.json").read_text())
            pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
            if not pooling.get("pooling_mode_mean_tokens") or len(modules) > 3:
                raise ModelUnavailable(
                    f"{base!r}: only mean-pooled encoders run on ONNX Runtime here; name it {base}#torch "
                    "or set RAGSVC_EMBEDDING_RUNTIME=torch"
                )
            self.max_tokens = int(
                json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
            )
            self.dimensions = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            # One counts whole texts (the chunker's sizes), one truncates as the model reads.
            self._whole = fixed_tokenizer(tokenizer)
            self._truncating = fixed_tokenizer(tokenizer, truncate_at=self.max_tokens)
            exported = export_model(model_dir, cache_dir)
            weights = str(exported.int8 if quantized else exported.fp32)
            # Questions run on the calling thread (one thread answers a dozen tokens as fast as all of them
            # on an idle machine, and does not stall when ingestion or the LLM keep the other cores busy);
            # chunks in batches on the batch runner's threads, all on this one session.
            self._session = _session(weights)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"embedding model {base!r} could not be loaded on ONNX Runtime ({self.runtime}): {exc}"
            ) from exc
        self._counted: dict[str, np.ndarray] = {}
        self._counted_lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads for each text, special tokens included, before truncation.

        The ids are kept a while: the chunker measures every chunk as the model will read it, and embedding
        that chunk then takes them instead of tokenising it again (0.6 s of 35 s over the Aalto docs).
        """
        encodings = self._whole.encode_batch(texts, add_special_tokens=True)
        fitting = [
            (text, e.ids) for text, e in zip(texts, encodings, strict=True) if len(e.ids) <= self.max_tokens
        ]
        with self._counted_lock:  # the chunker counts on ingestion's parse thread while another embeds
            for text, ids in fitting:
                self._counted[text] = np.asarray(ids, dtype=np.int32)
            while len(self._counted) > _COUNTED_TEXTS:  # the oldest go first
                del self._counted[next(iter(self._counted))]
        return [len(encoding.ids) for encoding in encodings]

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """What the model reads of each text: its ids, truncated to the model's maximum."""
        with self._counted_lock:
            ids = [self._counted.pop(text, None) for text in texts]
        missing = [row for row, found in enumerate(ids) if found is None]
        encodings = self._truncating.encode_batch([texts[row] for row in missing], add_special_tokens=True)
        for row, encoding in zip(missing, encodings, strict=True):
            ids[row] = np.asarray(encoding.ids, dtype=np.int32)
        return ids  # type: ignore[return-value] - every row is filled

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        ids = self._truncating.encode(text, add_special_tokens=True).ids
        return self._run(np.asarray([ids]))[0].tolist()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self.encode_ids(self.token_ids(texts))

    def encode_ids(self, encoded: list[np.ndarray]) -> np.ndarray:
        """Unit vectors of tokenised texts, in batches of texts of one token length (nothing is padded, so a
        vector depends on its own text only, bit for bit), side by side on the batch runner's threads."""
        by_length: dict[int, list[int]] = {}
        for row, ids in enumerate(encoded):
            by_length.setdefault(len(ids), []).append(row)
        batches = []
        for length, rows in by_length.items():
            size = max(1, self.batch_tokens // length)
            batches.extend(rows[start : start + size] for start in range(0, len(rows), size))
        # The largest first, so that the threads finish together on small ones.
        batches.sort(key=lambda rows: len(rows) * len(encoded[rows[0]]), reverse=True)
        vectors = np.empty((len(encoded), self.dimensions), dtype=np.float32)

        def embed(rows: list[int]) -> None:
            vectors[rows] = self._run(np.stack([encoded[row] for row in rows]))

        for _ in _batch_runner().map(embed, batches):  # re-raises what a batch raised
            pass
        return vectors

    def _run(self, input_ids: np.ndarray) -> np.ndarray:
        """Unit vectors of texts of one length: `input_ids` is (texts, tokens)."""
        input_ids = input_ids.astype(np.int64, copy=False)
        feeds = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids)}
        hidden = self._session.run([_OUTPUT], feeds)[0]
        pooled = hidden.mean(axis=1)  # mean pooling: every token is the text's own
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def identity(self, chunking: str) -> EmbeddingIdentity:
        return EmbeddingIdentity(
            provider=self.provider, model=self.model, dimensions=self.dimensions, chunking=chunking
        )
