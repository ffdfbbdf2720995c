"""Semantic video search: index a folder of videos into moments, query them by text or by video.

>>> from open_videoprism.search import IndexSettings, index_folder, SearchIndex
>>> index_folder("videos/", "videos.db", IndexSettings(checkpoint="google/videoprism-lvt-base-f16r288"))
>>> SearchIndex("videos.db").search("a dog catching a frisbee", k=5)
"""

from open_videoprism.search.db import Database
from open_videoprism.search.indexer import IndexSettings, Summary, find_videos, index_folder, windows
from open_videoprism.search.query import Hit, SearchIndex, top_k

__all__ = ["Database", "Hit", "IndexSettings", "SearchIndex", "Summary", "find_videos", "index_folder", "top_k", "windows"]
