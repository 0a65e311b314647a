"""Parsing keeps headings and prose and drops markup; chunks fit the model and carry their trail."""

from indexes.payload import embed_text
from ingest.chunk import ChunkingParams, chunk_document
from ingest.embedders import local_embedder
from ingest.parsers.html import parse_html
from ingest.parsers.markdown import parse_markdown
from ingest.parsers.rst import parse_rst

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
    assert "```bash\nsbatch --gpus=1 job.sh\n```" in text  # code stays code, fenced with its language
    assert "GPUs have VRAM." in text and "A GPU node." in text
    prose = text.replace("```bash", "").replace("```", "")
    for noise in ("toctree", "hidden/page", ":linenos:", "comment that must", "gpu.png", ":doc:", "``"):
        assert noise not in prose


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


def test_rst_file_metadata_anonymous_targets_and_version_notes_are_not_prose():
    doc = parse_rst(
        "deploying/eventlet.rst",
        ":orphan:\n:tocdepth: 2\n\neventlet\n========\n\n"
        "Use `gevent`__ instead.\n\n__ https://www.gevent.org\n\n"
        ".. versionadded:: 2.2\n\n.. versionchanged:: 3.0\n   Now always available.\n",
    )
    assert [s.trail for s in doc.sections] == [["eventlet"]]
    text = doc.sections[0].text
    assert "Use gevent instead." in text
    assert "Added in version 2.2." in text and "Changed in version 3.0." in text
    assert "Now always available." in text
    for noise in (":orphan:", "tocdepth", "https://www.gevent.org", "__"):
        assert noise not in text


def test_markdown_summary_leads_the_page_and_drawn_borders_are_dropped_but_code_keeps_its_lines():
    doc = parse_markdown(
        "op-guide/gateway.md",
        "---\ntitle: etcd gateway\ndescription: When to use the `gateway` and how to set it up\n---\n\n"
        "## Start the gateway\n\n```bash\n$ etcd gateway start\n+------+-----+\n| NAME | ID  |\n+------+-----+\n```\n\n"
        "---\n\nDone.\n",
    )
    assert doc.sections[0].trail == ["etcd gateway"]
    assert doc.sections[0].text == "When to use the gateway and how to set it up"
    body = doc.sections[1].text
    assert body == "```bash\n$ etcd gateway start\n| NAME | ID  |\n```\n\nDone."


def test_a_word_longer_than_a_chunk_is_cut_to_fit_the_model():
    embedder = local_embedder()
    token = "f(x);g[y]=" * 120  # one whitespace-free run of hundreds of tokens, like minified code
    doc = parse_rst("keys.rst", f"Title\n=====\n\nThe key::\n\n    {token}\n")
    params = ChunkingParams(max_tokens=embedder.max_tokens)
    chunks = chunk_document(doc, params, embedder.count_tokens)
    assert len(chunks) > 1
    assert max(embedder.count_tokens([c.embed_text for c in chunks])) <= embedder.max_tokens
    # Each piece of the literal block is fenced on its own, so every chunk's code reads as code.
    assert all(c.text.startswith("```\n") and c.text.endswith("\n```") for c in chunks[1:])
    assert "".join(c.text.removeprefix("```\n").removesuffix("\n```") for c in chunks[1:]) == token


def test_table_rows_carry_their_column_names():
    markdown = parse_markdown(
        "hardware.md",
        "# Hardware\n\n| Provider | Type | vCPUs |\n|---|---|---|\n| AWS | `m4.large` | 2 |\n| GCE | n1 | |\n\nAfter.\n",
    )
    assert (
        markdown.sections[0].text
        == "Provider: AWS; Type: m4.large; vCPUs: 2\n\nProvider: GCE; Type: n1\n\nAfter."
    )
    rst = parse_rst(
        "hardware.rst",
        "Hardware\n========\n\n.. csv-table:: Nodes\n   :delim: |\n   :header-rows: 1\n\n"
        "   Node | CPU\n   milan[1-32] | 2x64 core `EPYC <https://amd.com>`__\n\n"
        ".. list-table::\n   :header-rows: 1\n\n   * - Queue\n     - Limit\n   * - short\n     - 4 hours\n",
    )
    assert rst.sections[0].text == (
        "Nodes\nNode: milan[1-32]; CPU: 2x64 core EPYC\n\nQueue: short; Limit: 4 hours"
    )


def test_tab_and_expand_labels_survive_as_text_but_paths_do_not():
    doc = parse_markdown(
        "install.md",
        '# Install\n\n{{< tabpane >}}\n{{< tab "macOS" >}}brew install etcd{{< /tab >}}\n{{< /tabpane >}}\n\n'
        '=== "Linux"\n\n    apt install etcd\n\n{{% expand "Build from source" %}}make{{% /expand %}}\n\n'
        'See [the guide]({{< relref "op-guide/clustering.md" >}}) and {{< include "snippets/note.md" >}}.\n',
    )
    text = doc.sections[0].text
    assert "macOS brew install etcd" in text and "Linux" in text and "Build from source make" in text
    assert "See the guide and ." in text
    for noise in ("{{", "relref", "snippets", "==="):
        assert noise not in text


def test_rst_tables_in_other_forms_keep_their_text_and_never_fail_the_page():
    doc = parse_rst(
        "storage.rst",
        "Storage\n=======\n\n.. csv-table::\n   :file: nodes.csv\n   :header-rows: 1\n\n"
        ".. list-table::\n   :header-rows: 1\n\n   - - Type\n     - Path\n   - - Ramdisk\n     - /dev/shm\n\n"
        "Text after.\n",
    )
    assert doc.sections[0].text == "Type: Ramdisk; Path: /dev/shm\n\nText after."


def test_icon_roles_and_shortcodes_are_dropped_and_ui_labels_kept():
    rst = parse_rst(
        "ui.rst",
        "Profile\n=======\n\nClick :material-outlined:`account_circle;2em` :guilabel:`&Profile`, then "
        ":menuselection:`File --> Save As` :octicon:`rocket;1em;sd-text-info`.\n",
    )
    assert " ".join(rst.sections[0].text.split()) == "Click Profile, then File > Save As ."
    md = parse_markdown(
        "ui.md", "# Profile\n\nClick :material-account-circle: **Profile** :octicons-rocket-16:.\n"
    )
    assert " ".join(md.sections[0].text.split()) == "Click Profile ."


def test_myst_and_docusaurus_markup_keeps_its_text_and_drops_its_machinery():
    doc = parse_markdown(
        "install.md",
        "(install-label)=\n# Installing\n\n% a comment\nSee {ref}`the setup guide <setup>` and {doc}`../tut/gpu-jobs`.\n\n"
        "```{note} Before you start\n:class: tip\n\nBack up your **data** first.\n```\n\n"
        "```{toctree}\n:maxdepth: 2\n\nhidden-page\n```\n\n"
        "````{tab-item} Linux\n```bash\napt install widget\n```\n````\n\n"
        ":::tip Pro tip\nUse the cache.\n:::\n\nimport Tabs from '@theme/Tabs';\n",
    )
    assert doc.sections[0].text.split("\n\n") == [
        "See the setup guide and gpu jobs.",
        "Before you start",
        "Back up your data first.",
        "Linux\n```bash\napt install widget\n```",
        "Pro tip\nUse the cache.",
    ]


def test_markdown_reference_images_footnotes_alerts_and_multiline_tags_leave_only_words():
    doc = parse_markdown(
        "page.md",
        "# Page\n\n[![Deploys by Netlify][badge]][netlify] and see [Widget docs] or [#1528].\n\n"
        "> [!IMPORTANT]\n> Back up first.[^1]\n\n"
        '<img src="/images/yes.png"\n     alt="A button"/> Then click it.\n\n'
        '![Logo](logo.png){ width="300" } and [Start](#){ .md-button }\n\n'
        '!!! info inline end "Sidebar"\n\n    Body.\n\n'
        "Use arr[0] and dict[str].\n\n[^1]: Nightly backups run at 2am.\n[netlify]: https://netlify.com\n",
    )
    assert doc.sections[0].text.split("\n\n") == [
        "Deploys by Netlify and see Widget docs or #1528.",
        "Important\nBack up first.",
        "Then click it.",
        "Logo and Start",
        "Sidebar",
        "    Body.",
        "Use arr[0] and dict[str].",
        "Nightly backups run at 2am.",
    ]


def test_rst_links_roles_and_bold_that_run_across_lines_and_tab_indented_tables_are_cleaned():
    doc = parse_rst(
        "guide.rst",
        "Guide\n=====\n\nRead `Technical documentation with Sphinx\n<https://example.org/sphinx/>`__ first, or "
        "come to our :ref:`garage\nhelp session <garage>`.  **If you grade yourself,\nyou are responsible.**\n\n"
        "      .. csv-table::\n\t :header-rows: 1\n\t :delim: |\n\n\t Cores | time\n\t 1     | 23.8 s\n",
    )
    assert doc.sections[0].text == (
        "Read Technical documentation with Sphinx first, or come to our garage\nhelp session.  "
        "If you grade yourself,\nyou are responsible.\n\nCores: 1; time: 23.8 s"
    )


def test_mkdocs_heading_ids_slash_blocks_code_includes_and_snake_case_as_fastapi_docs_write_them():
    doc = parse_markdown(
        "tutorial/response-model.md",
        "# Response Model { #response-model }\n\nIntro.\n\n"
        "## Use the `response_model_exclude_unset` parameter { #use-the-exclude-unset }\n\n"
        "Set response_model_exclude_unset=True; snake_case and _private stay, *emphasis* and _this_ go.\n\n"
        "{* ../../docs_src/response_model/tutorial004_py310.py hl[22] *}\n\n"
        "/// note | Technical Details\n\nThe model is *filtered*.\n\n///\n\n"
        "/// tip\n\nA tip.\n\n///\n\n"
        'Served over <abbr title="Server Name Indication">SNI</abbr>.\n',
    )
    assert doc.title == "Response Model"
    assert [s.trail for s in doc.sections] == [
        ["Response Model"],
        ["Response Model", "Use the response_model_exclude_unset parameter"],
    ]
    section = doc.sections[1]
    assert section.anchor == "use-the-exclude-unset"  # the page's own id, which its links point at
    assert section.text.split("\n\n") == [
        "Set response_model_exclude_unset=True; snake_case and _private stay, emphasis and this go.",
        "Technical Details",
        "The model is filtered.",
        "A tip.",
        "Served over SNI (Server Name Indication).",
    ]


def test_a_link_wrapped_onto_the_next_line_keeps_its_words_and_drops_its_address():
    # Hard-wrapped Markdown (gRPC's docs wrap at 80 columns) splits a link's text over two lines; read a line at
    # a time, its address was left in the text as "policy](https://...)", words a search then matched.
    doc = parse_markdown(
        "guides/lb.md",
        "Read the [custom load balancing\npolicy](https://grpc.io/docs/guides/custom-load-balancing/) guide and"
        " [the\nFAQ][faq]. A [synchronous\nclient](https://github.com/grpc/blob/{{< param grpc_vers >}}/c.cc)."
        "\n\n```cpp\nauto f = [&result,\n          &cv](Status status) {};\n"
        "cmake version {{< param cmake-version >}}\n```\n",
    )
    text = doc.sections[0].text
    assert "custom load balancing\npolicy guide" in text and "the\nFAQ. A synchronous\nclient." in text
    assert "https" not in text and "](" not in text.split("auto f")[0]
    assert "[&result,\n          &cv](Status status) {};" in text  # code keeps its brackets
    assert "cmake version" in text and "{{" not in text


def test_code_spans_escapes_and_character_references_read_as_the_page_shows_them():
    # Web and API docs put tags and generics in code spans (`<script type="module">`, `Array<string>`): read as
    # markup, they were dropped from the text, and with them the words a question about them would match.
    doc = parse_markdown(
        "guide/features.md",
        '# Features\n\nAssets referenced by `<script type="module" src>` and `<link href>` are bundled; '
        "[`build.target`](#build-target) takes `Array<string>`.\n\n"
        "| Default | CLI Override |\n| --- | --- |\n| `2` | <code>--tab-width \\<int></code> |\n\n"
        "Use &lt;div&gt; &amp; \\*literal stars\\*, but *emphasis*; ?a=1&not=2 stays.\n\n"
        "<script setup>\nimport { data } from './team.data'\nconst hidden = 1\n</script>\n<Badge />\n\nAfter.\n",
    )
    text = doc.sections[0].text
    assert 'Assets referenced by <script type="module" src> and <link href> are bundled' in text
    assert "build.target takes Array<string>." in text
    assert "CLI Override: --tab-width <int>" in text
    assert "Use <div> & *literal stars*, but emphasis; ?a=1&not=2 stays." in text
    assert "hidden" not in text and "import" not in text and "After." in text


def test_code_blocks_stay_fenced_in_every_chunk_and_the_fences_are_not_embedded():
    # Unfenced, Qwen2.5-Coder-1.5B took a source's YAML for more sources and copied their headers (README).
    code = [
        f"    setting_{i} = configure(name='value {i}')" + ("\n" if i % 7 == 0 else "") for i in range(60)
    ]
    markdown = '# Setup\n\nAdd the following to `settings.py`:\n\n```python title="settings.py" {2}\n'
    doc = parse_markdown("setup.md", markdown + "\n".join(code) + "\n```\n\nThen restart.\n")
    embedder = local_embedder()
    chunks = chunk_document(doc, ChunkingParams(max_tokens=96), embedder.count_tokens)
    assert len(chunks) > 2
    kept: list[str] = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        opened = [i for i, line in enumerate(lines) if line == "```python"]
        closed = [i for i, line in enumerate(lines) if line == "```"]
        assert len(opened) == len(closed) == 1 and opened[0] < closed[0], chunk.text
        kept += [line for line in lines[opened[0] + 1 : closed[0]] if line.strip()]
        assert "```" not in chunk.embed_text
    assert kept == [line.strip("\n") for line in code]  # every line once, in order, indentation kept
    assert chunks[0].text.startswith("Add the following to settings.py:\n\n```python\n")
    assert chunks[-1].text.endswith("```\n\nThen restart.")

    rst = parse_rst(
        "run.rst", "Run\n===\n\nSubmit it::\n\n    sbatch ``job.sh``\n\n    squeue -u $USER\n\nDone.\n"
    )
    assert rst.sections[0].text == "Submit it:\n```\nsbatch ``job.sh``\n\nsqueue -u $USER\n```\n\nDone."
    html = parse_html(
        "run.html",
        '<h1>Run</h1><p>Submit it:</p><div class="highlight-bash"><pre>sbatch job.sh\n</pre></div><p>Done.</p>',
    )
    assert html.sections[0].text == "Submit it:\n\n```bash\nsbatch job.sh\n```\n\nDone."
    # A fence as CommonMark reads one: a line of backticks with a backtick after them opens no code
    assert embed_text([], "```js `x` is inline\n~~~ `y`\ncode\n~~~") == "\n\n```js `x` is inline\ncode\n"
