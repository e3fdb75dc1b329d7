"""The reference for benchmarks/load.py: a Gradio app with the app's summarize signature that only
opens the photo (no network, no search), served the same way (same guard, same queue).

With --outputs it returns what the app's summarize returns in kind and size — three words, a
line of text and six thumbnails served as static files — so the cost of Gradio's handling of
those outputs is measured apart from the app's own work.
"""
import argparse
import os
import sys
from pathlib import Path

import gradio as gr
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from i2v.serving import serve  # noqa: E402

THUMBS = Path(os.environ.get("I2V_HOME", ".")) / "thumbs"


def summarize(photo, k=3, model_name=None):
    with Image.open(photo) as im:
        w, h = im.size
    return {"photo": 1.0}, f"{w}x{h}", []


def summarize_outputs(photo, k=3, model_name=None):
    size = summarize(photo)[1]
    return ({"dog": 0.5, "grass": 0.3, "ball": 0.2}, f"{size}: the words explain 40 % of the photo's code",
            [(str(THUMBS / f"{i}.jpg"), f"distance 0.{i}5") for i in range(6)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7861)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--outputs", action="store_true", help="return the app's kind of outputs (see above)")
    args = ap.parse_args()
    allowed = []
    if args.outputs:
        THUMBS.mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.new("RGB", (256, 192), (40 * i, 80, 120)).save(THUMBS / f"{i}.jpg")
        allowed = [str(THUMBS)]
        gr.set_static_paths(allowed)
    with gr.Blocks() as demo:
        photo = gr.Image(type="filepath")
        k, model = gr.Number(3), gr.Textbox("learn-all")
        words, fit, evidence = gr.Label(), gr.Markdown(), gr.Gallery()
        gr.Button().click(summarize_outputs if args.outputs else summarize, [photo, k, model], [words, fit, evidence],
                          api_name="summarize")
    demo.queue(default_concurrency_limit=4, max_size=64, status_update_rate=1.0)
    serve(demo, host=args.host, port=args.port, allowed_paths=allowed)


if __name__ == "__main__":
    main()
