"""The reference for benchmarks/load.py: a Gradio app with the app's summarize signature that only
opens the photo (no network, no search), served the same way (same guard, same queue)."""
import argparse
import sys
from pathlib import Path

import gradio as gr
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from i2v.serving import serve  # noqa: E402


def summarize(photo, k=3, model_name=None):
    with Image.open(photo) as im:
        w, h = im.size
    return {"photo": 1.0}, f"{w}x{h}", []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7861)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    with gr.Blocks() as demo:
        photo = gr.Image(type="filepath")
        k, model = gr.Number(3), gr.Textbox("learn-all")
        words, fit, evidence = gr.Label(), gr.Markdown(), gr.Gallery()
        gr.Button().click(summarize, [photo, k, model], [words, fit, evidence], api_name="summarize")
    demo.queue(default_concurrency_limit=4, max_size=64)
    serve(demo, host=args.host, port=args.port, allowed_paths=[])


if __name__ == "__main__":
    main()
