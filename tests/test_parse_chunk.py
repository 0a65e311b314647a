"""Parsing keeps headings and prose and drops markup; chunks fit the model and carry their trail."""

from ingest.chunk import ChunkingParams, chunk_document
from ingest.embed import local_embedder
from ingest.parse import parse_markdown, parse_rst

RST = """\
.. _gpu-label:

==============
GPU computing
==============

.. admonition:: Abstract

   Request a GPU with :doc:`the tutorial <../tut/gpu>` and ``--gpus=1``.

.. toctree::
   :maxdepth: 1

   hidden/page

Reserving a GPU
---------------

Use :ref:`slurm` with **--gpus=N**. See `Slurm docs <https://slurm.schedmd.com>`__.

.. code-block:: bash
   :linenos:

   sbatch --gpus=1 job.sh

Memory
~~~~~~

.. note:: GPUs have VRAM.

.. figure:: /images/gpu.png

   A GPU node.

.. This is a comment that must not appear.
"""

MARKDOWN = """\
---
title: "Installing the tool"
weight: 10
---

Intro text before any heading.

## Step one {#first-step}

{{< alert color="warning" >}}Back up your data first.{{< /alert >}}

Run [the installer](https://example.org/install) now.

!!! note "Careful"
    Admonition body stays.

### Sub step

```bash
# not a heading
pip install tool
```
"""


def test_rst_sections_keep_heading_trails_and_prose_without_markup():
    doc = parse_rst("triton/gpu.rst", RST)
    assert doc.title == "GPU computing"
    trails = [s.trail for s in doc.sections]
    assert trails == [
        ["GPU computing"],
        ["GPU computing", "Reserving a GPU"],
        ["GPU computing", "Reserving a GPU", "Memory"],
    ]
    assert doc.sections[1].anchor == "reserving-a-gpu"
    text = "\n".join(s.text for s in doc.sections)
    assert "Request a GPU with the tutorial and --gpus=1." in text
    assert "Use slurm with --gpus=N. See Slurm docs." in text
    assert "sbatch --gpus=1 job.sh" in text
    assert "GPUs have VRAM." in text and "A GPU node." in text
    for noise in ("toctree", "hidden/page", ":linenos:", "comment that must", "gpu.png", ":doc:", "``"):
        assert noise not in text


def test_markdown_front_matter_title_shortcodes_and_fences():
    doc = parse_markdown("guide/install.md", MARKDOWN)
    assert doc.title == "Installing the tool"
    assert doc.metadata["weight"] == 10
    trails = [s.trail for s in doc.sections]
    assert trails == [
        ["Installing the tool"],
        ["Installing the tool", "Step one"],
        ["Installing the tool", "Step one", "Sub step"],
    ]
    assert doc.sections[1].anchor == "first-step"
    text = "\n".join(s.text for s in doc.sections)
    assert "Back up your data first." in text and "{{" not in text
    assert "Run the installer now." in text
    assert "Careful" in text and "Admonition body stays." in text
    assert "# not a heading" in doc.sections[2].text


def test_chunks_never_exceed_the_model_limit_and_carry_their_section():
    embedder = local_embedder()
    long_section = "Reserving a GPU\n---------------\n\n" + "\n\n".join(
        f"Paragraph {i} explains how the scheduler allocates accelerators to jobs in partition {i}. " * 6
        for i in range(30)
    )
    doc = parse_rst("long.rst", "Title\n=====\n\n" + long_section)
    params = ChunkingParams(max_tokens=embedder.max_tokens)
    chunks = chunk_document(doc, params, embedder.count_tokens)
    assert len(chunks) > 5
    measured = embedder.count_tokens([c.embed_text for c in chunks])
    assert max(measured) <= embedder.max_tokens
    assert all(c.embed_text.startswith("Title > Reserving a GPU\n\n") for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
