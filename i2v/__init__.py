"""image2vec: a joint word + image space where R f ≈ D x (a photo's code ≈ the sum of its words)."""
from .checkpoint import DEFAULT_MODEL, list_checkpoints, load, save
from .data import Dataset, load_dataset, read_coco, read_flickr, read_tags_csv
from .features import Backbone, ImageError, extract, get_backbone, list_backbones, load_image
from .index import GalleryIndex, build_faiss
from .models import MODELS, Image2Vec
from .pipeline import (UserError, encode_photo, evaluate, index_folders, load_index, load_model, neighbours,
                       open_index, query_vector, search, summarize, sync_index, train)
from .query import QueryError, parse, resolve
from .sparse import gram, omp, omp_gram

__all__ = ["DEFAULT_MODEL", "list_checkpoints", "load", "save", "Dataset", "load_dataset", "read_coco",
           "read_flickr", "read_tags_csv", "Backbone", "ImageError", "extract", "get_backbone", "list_backbones",
           "load_image", "GalleryIndex", "build_faiss", "MODELS", "Image2Vec", "UserError", "encode_photo",
           "evaluate", "index_folders", "load_index", "load_model", "neighbours", "open_index", "query_vector",
           "search", "summarize", "sync_index", "train", "QueryError", "parse", "resolve", "gram", "omp", "omp_gram"]
