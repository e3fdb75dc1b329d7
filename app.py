"""image2vec: describe photos in words, find photos from words. Gradio wiring only.

python app.py [--host 127.0.0.1] [--port 7860] [--gallery INDEX_DIR] [--model NAME]
(also I2V_HOST, I2V_PORT, I2V_GALLERY, I2V_MODEL for Hugging Face Spaces)
"""
import argparse
import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# several requests run at once: one thread each (network, BLAS, FAISS) beats threads fighting over the cores
for _var in ("I2V_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gradio as gr  # noqa: E402

from i2v import checkpoint  # noqa: E402
from i2v.openvocab import SOURCE_LABELS  # noqa: E402
from i2v.pipeline import format_query  # noqa: E402
from i2v.serving import serve  # noqa: E402
from i2v.plots import neighbour_map  # noqa: E402
from i2v.service import DEFAULT_GALLERY, Service, UserError  # noqa: E402

TITLE = "image2vec — describe photos in words, find photos from words"
INTRO = ("Upload a photo to get the words that describe it, type `dog + grass` to find photos, or compare a word's "
         "*visual* neighbours with its text neighbours. The model learned 1,387 words from captioned photos "
         "(people, dogs, sports, outdoor scenes) and knows 968 more from the network's ImageNet classes and from "
         "word vectors (marked where they appear); it says so when a photo is unlike what it learned from.")
QUERY_HINT = ("Words joined by `+` and `-` (`snow + young`, `dog - leash + ball`), weights (`2*dog`), or plain "
              "text (`two dogs running on the beach`). With a photo: `[photo] - snow + beach`.")
CSS = "@media (max-width: 480px) { #intro h1 { font-size: 1.5rem; } }"  # phones: the title leaves room
EXAMPLE_PHOTOS = sorted(str(p) for p in DEFAULT_GALLERY.glob("*/*.jpg"))[::7][:6]
SERVICE = None


def service():
    global SERVICE
    if SERVICE is None:
        SERVICE = Service()
    return SERVICE


class PhotoInput(gr.Image):
    """gr.Image that hands over the uploaded file untouched: i2v decodes it (size checks first) and
    words its errors, the same way for the app and the CLI."""

    def get_block_name(self):  # render with the stock image widget
        return "image"

    def preprocess(self, payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        try:  # pasted images (data: URLs) are written to a file by Gradio
            return super().preprocess(payload)
        except Exception:
            raise gr.Error("this file is not a photo we can read (empty, broken or not an image)",
                           print_exception=False) from None


LAST_ERROR = {}  # session -> the last user error, shown where the answer would be (see `failed`)


def _err(e, request=None):
    if len(LAST_ERROR) > 10_000:
        LAST_ERROR.clear()
    LAST_ERROR[_session(request)] = e
    return gr.Error(str(e), print_exception=False)


def clear_summary():
    """The answer emptied before a new one is computed: no stale answer stays under a new error."""
    return None, "*Working…*", None


def failed(request: gr.Request = None):
    return f"**Could not answer:** {LAST_ERROR.pop(_session(request), 'see the message above.')}"


def search_failed(request: gr.Request = None):
    """The message where the results were, and the queries the person may have meant, one click each."""
    fixes = getattr(LAST_ERROR.get(_session(request)), "fixes", [])
    return failed(request), gr.update(choices=fixes, value=None, visible=bool(fixes))


def _session(request):
    return getattr(request, "session_hash", None)


def summarize(photo, k=3, model_name=None, request: gr.Request = None):
    try:
        res = service().summarize(photo, k, model_name or None, session=_session(request))
    except UserError as e:
        raise _err(e, request) from None
    total = sum(max(c, 0.0) for _, c in res["words"]) or 1.0
    words = {w: round(max(c, 0.0) / total, 4) for w, c in res["words"]}  # share of the summary's weight
    text = " + ".join(f"**{w}** ({c:.2f}" + (f"; {SOURCE_LABELS[res['sources'][w]]})" if res["sources"][w] != "captions"
                                             else ")") for w, c in res["words"]) or "(no word fits)"
    fit = (f"{text}\n\nWeights are the words' coefficients in the photo's code. Together the words "
           f"account for **{100 * res['fit']:.0f}%** of the code (its squared length); the rest is what "
           f"these {len(res['words'])} words do not describe.")
    if res["familiar"] is False:
        fit = ("⚠️ **This photo is unlike the photos the model learned from**: its words account for less of it "
               "than for 95% of the Flickr8k dev photos, so they may be off.\n\n" + fit)
    return words, fit, [(p, f"distance {d:.2f}") for p, d in res["evidence"]]


def search(query, photo=None, k=12, request: gr.Request = None):
    try:
        hits, terms, photo_weight = service().search(query, photo, k, session=_session(request))
    except UserError as e:
        raise _err(e, request) from None
    return ([(p, f"distance {d:.2f}") for p, d in hits],
            f"Searched for: **{format_query(terms, photo_weight, service().model)}** — {len(hits)} photos, nearest first "
            "(distance in the joint space: smaller is closer)")


def neighbours(word, k=10):
    try:
        res = service().neighbours(word, k)
    except UserError as e:
        raise _err(e) from None
    n = max(len(res["visual"]), len(res["text"]))
    model = service().model
    rows = [[i + 1, *(res["visual"][i] if i < len(res["visual"]) else ["", None]),
             SOURCE_LABELS[model.word_source(res["visual"][i][0])] if i < len(res["visual"]) else "",
             *(res["text"][i] if i < len(res["text"]) else ["", None])] for i in range(n)]
    note = " ".join(v for k_, v in res.items() if k_.endswith("_error"))
    return rows, neighbour_map(service().model, res), note


def _my_photos(session):
    photos = service().my_photos(session)
    n_gallery, n_user = service().counts(session)
    where = "this browser session only; deleted when it ends" if service().public else "kept on this computer"
    return [p for p, _ in photos], f"**Your photos: {n_user}** ({where}) · gallery: {n_gallery}"


def add_photos(files, request: gr.Request = None):
    try:
        added, already, errors = service().add_photos(files, session=_session(request))
    except UserError as e:
        raise _err(e) from None
    msg = f"Added {added} photo(s)" + (f"; {already} already there" if already else "") + "."
    if errors:
        msg += " Skipped: " + "; ".join(errors[:5])
    photos, count = _my_photos(_session(request))
    return msg, photos, count


def show_my_photos(request: gr.Request = None):
    return _my_photos(_session(request))


def delete_photo(selected, request: gr.Request = None):
    """Delete the photo selected in the "My photos" grid (an index into it); -1 deletes all."""
    session = _session(request)
    try:
        mine = service().my_photos(session)
        if selected is None or (selected != -1 and not 0 <= int(selected) < len(mine)):
            raise UserError("click a photo first, then Delete selected")
        n = service().delete_photos(None if selected == -1 else [mine[int(selected)][1]], session=session)
    except (UserError, TypeError, ValueError) as e:
        raise _err(e) from None
    photos, count = _my_photos(session)
    return f"Deleted {n} photo(s).", photos, count, None


def _selected_index(evt: gr.SelectData):
    return evt.index


def end_session(request: gr.Request):
    service().end_session(_session(request))


def results_markdown():
    path = checkpoint.CHECKPOINTS_DIR / "eval_flickr8k_test.json"
    lines = ["### The four models, and the open-world one", "",
             "- **simple** — fixed random Johnson–Lindenstrauss projection `R`; word vectors `D` by least squares.",
             "- **learn-all** — `D` and `R` learned together (L2 fit + L2 contrastive + word term).",
             "- **open-world** (default) — learn-all plus 627 ImageNet class words (columns regressed from the "
             "network's own head) and 341 everyday COCO words (columns from GloVe); any common word can be searched.",
             "- **weak-tag** — trained on noisy tags (one caption's words, some dropped, some wrong) with a learned weight per word.",
             "- **baseline** — ImageNet classifier → GloVe vectors of the top classes → nearest vocabulary words.", ""]
    if path.is_file():
        rep = json.loads(path.read_text())
        cols = ["p@3", "r@3", "p@5", "t2i_r@1", "t2i_r@5", "t2i_r@10", "t2i_medr"]
        lines += ["### Flickr8k test split (1,000 photos, 5,000 caption queries)", "",
                  "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, m in rep["models"].items():
            lines.append(f"| {name} | " + " | ".join((f"{m[c]:.0f}" if c.endswith("medr") else f"{m[c]:.3f}")
                                                     if c in m else "–" for c in cols) + " |")
        if "objects" in rep:
            lines += ["", f"### Naming objects: {rep['objects']['photos']} photos, one per ImageNet class", "",
                      "| model | class word in 3 words | in 5 words |", "|---|---|---|"]
            lines += [f"| {n} | {m['acc@3']:.3f} | {m['acc@5']:.3f} |" for n, m in rep["objects"].items() if n != "photos"]
            lines += ["", "A coverage check, not a score: these photos were probably in the network's own training set."]
    lines += ["", "p@k/r@k: k-word summaries (sparse recovery) against the words of the photo's 5 captions. "
              "t2i: each caption's words as a word-sum query over the 1,000 test photos (L2).", "",
              "**Data and licenses.** Trained on Flickr8k (Hodosh, Young & Hockenmaier 2013, JAIR 47); its photos are "
              "not part of this app. CNN: EfficientNet-Lite0 with ImageNet weights (Apache-2.0). Text neighbours: "
              "GloVe 6B 50d (Pennington, Socher & Manning 2014; PDDL). Everyday words: COCO captions (CC BY 4.0); "
              "class hypernyms: WordNet 3.0 (Princeton University, WordNet license). Gallery photos: see "
              "demo/gallery/ATTRIBUTION.md."]
    return "\n".join(lines)


def build():
    # Gradio's own copies of served and uploaded files are deleted after an hour (checked every 10 min)
    with gr.Blocks(title="image2vec", delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="intro")
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab stays one tap away
            with gr.Tab("Summarize in 3 words"):
                with gr.Row():
                    with gr.Column():
                        photo = PhotoInput(type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"], label="Photo",
                                         elem_id="summ-photo")
                        k = gr.Slider(1, 8, value=3, step=1, label="Number of words (k)")
                        model = gr.Dropdown(checkpoint.list_checkpoints(), value=service().model_name
                                            if service().model_name in checkpoint.list_checkpoints() else None,
                                            label="Model")
                        go = gr.Button("Summarize", variant="primary", elem_id="summ-go")
                    with gr.Column():
                        words = gr.Label(label="Words — each one's share of the summary (not a probability)",
                                         elem_id="summ-words")
                        fit = gr.Markdown(elem_id="summ-fit")
                        evidence = gr.Gallery(label="Nearest photos in the gallery", columns=3, height="auto",
                                              elem_id="summ-evidence")
                gr.Examples(EXAMPLE_PHOTOS, inputs=photo, label="Example photos (click one)")
                go.click(clear_summary, None, [words, fit, evidence], queue=False, api_visibility="private").then(
                    summarize, [photo, k, model], [words, fit, evidence], api_name="summarize").failure(
                    failed, None, fit, api_visibility="private")
            with gr.Tab("Find images from words"):
                with gr.Row():
                    query = gr.Textbox(label="Words", placeholder="dog + grass", scale=4, elem_id="search-query")
                    search_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-go")
                gr.Markdown(QUERY_HINT)
                with gr.Accordion("Optional: start from a photo ([photo] ± words)", open=False):
                    qphoto = PhotoInput(type="filepath", image_mode=None, label="Photo", height=200)
                status = gr.Markdown(elem_id="search-status")
                fixes = gr.Radio([], label="Did you mean (click to search)", visible=False, elem_id="search-fixes")
                results = gr.Gallery(label="Results, nearest first", columns=6, height="auto", elem_id="search-results")
                gr.Examples([["dog + grass"], ["snow + young"], ["beach + child"], ["dog - leash + ball"],
                             ["two people by the water"]], inputs=query, label="Try")
                k_search = gr.Number(value=12, visible=False)
                hide = gr.update(visible=False)
                for trigger, name in ((search_btn.click, "search"), (query.submit, None)):
                    trigger(lambda: (None, "*Working…*", hide), None, [results, status, fixes], queue=False,
                            api_visibility="private").then(
                        search, [query, qphoto, k_search], [results, status], api_name=name,
                        api_visibility="public" if name else "private").failure(
                        search_failed, None, [status, fixes], api_visibility="private")
                fixes.input(lambda fix: (fix, hide), fixes, [query, fixes], api_visibility="private").then(
                    search, [query, qphoto, k_search], [results, status], api_visibility="private").failure(
                    search_failed, None, [status, fixes], api_visibility="private")
            with gr.Tab("Compare to Word2Vec neighbours"):
                gr.Markdown("A word's **visual** neighbours (columns of the learned `D`: words whose photos look alike) "
                            "beside its **text** neighbours in GloVe 6B 50d (pretrained on Wikipedia + Gigaword text; "
                            "it plays the word2vec part here).")
                with gr.Row():
                    word = gr.Textbox(label="Word", value="yellow", scale=4, elem_id="nb-word")
                    nb_btn = gr.Button("Compare", variant="primary", scale=1, elem_id="nb-go")
                nb_note = gr.Markdown()
                table = gr.Dataframe(headers=["#", "visual neighbour", "cosine", "its vector", "GloVe neighbour", "cosine"],
                                     label="Neighbours", elem_id="nb-table")
                gr.Markdown("2-D map of the neighbourhood in both spaces (PCA of the vectors):")
                plot = gr.Plot(show_label=False)
                k_nb = gr.Number(value=10, visible=False)
                gr.Examples([["yellow"], ["dog"], ["beach"], ["red"], ["snow"]], inputs=word, label="Try")
                nb_btn.click(neighbours, [word, k_nb], [table, plot, nb_note], api_name="neighbours")
                word.submit(neighbours, [word, k_nb], [table, plot, nb_note])
            with gr.Tab("My photos"):
                my_count = gr.Markdown(elem_id="my-count")
                with gr.Row():
                    uploads = gr.File(file_count="multiple", file_types=["image"], label="Add photos (searched with the gallery)",
                                      elem_id="my-upload", scale=3)
                    add_btn = gr.Button("Add photos", variant="primary", scale=1, elem_id="my-add")
                my_status = gr.Markdown(elem_id="my-status")
                my_grid = gr.Gallery(label="Your photos (click one to select it)", columns=6, height=360, elem_id="my-grid")
                selected = gr.State(None)
                with gr.Row():
                    del_btn = gr.Button("Delete selected", elem_id="my-delete")
                    del_all = gr.Button("Delete all", variant="stop", elem_id="my-delete-all")
                all_marker = gr.Number(value=-1, visible=False)
                add_btn.click(add_photos, [uploads], [my_status, my_grid, my_count], api_name="add_photos")
                my_grid.select(_selected_index, None, selected)
                del_btn.click(delete_photo, [selected], [my_status, my_grid, my_count, selected], api_name="delete_photo")
                del_all.click(delete_photo, [all_marker], [my_status, my_grid, my_count, selected], api_name="delete_all")
            with gr.Tab("Models & results"):
                gr.Markdown(results_markdown())
        demo.load(show_my_photos, None, [my_grid, my_count])
        demo.unload(end_session)
    demo.queue(default_concurrency_limit=4, max_size=64, status_update_rate=1.0)
    return demo


def main(argv=None):
    ap = argparse.ArgumentParser(description=TITLE)
    # Hugging Face Spaces set GRADIO_SERVER_NAME=0.0.0.0; everywhere else the default is loopback only
    ap.add_argument("--host", default=os.environ.get("I2V_HOST", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")))
    ap.add_argument("--port", type=int, default=int(os.environ.get("I2V_PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    ap.add_argument("--gallery", default=os.environ.get("I2V_GALLERY"), help="index folder from `python -m i2v index`")
    ap.add_argument("--model", help="checkpoint name (default: $I2V_MODEL, else the best)")
    ap.add_argument("--public", action="store_true",
                    help="public mode (also implied by a non-loopback --host or a Hugging Face Space): "
                         "each browser session's photos are private to it and deleted with it")
    args = ap.parse_args(argv)
    public = args.public or bool(os.environ.get("SPACE_ID")) or args.host not in ("127.0.0.1", "localhost", "::1")
    global SERVICE
    SERVICE = Service(model=args.model, gallery=args.gallery, public=public)
    SERVICE.warm_up()
    # the thumbnails the app writes are served as they are: no hashing and copying into Gradio's
    # cache for every answer (they hold nothing but re-encoded pixels of indexed photos)
    gr.set_static_paths(SERVICE.allowed_dirs())
    serve(build(), host=args.host, port=args.port, allowed_paths=SERVICE.allowed_dirs(), css=CSS)


if __name__ == "__main__":
    main()
