"""What a folder walk skips on purpose, by kind, so that ``run.json`` and the summary can say what it skipped."""

from __future__ import annotations

#: What a folder walk skips on purpose, by kind (lower-case extensions; ``system``: names, see :func:`ignored_kind`).
IGNORED_KINDS = {
    "image": (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic"),
    "text": (".txt", ".nfo", ".md", ".pdf", ".log", ".json", ".xml", ".csv", ".html", ".rtf", ".doc", ".docx"),
    "playlist": (".m3u", ".m3u8", ".pls", ".cue", ".xspf", ".wpl"),
}
SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".directory", "icon\r"})


def ignored_kind(name: str) -> str:
    """The kind of a file a folder walk skips: ``system`` (``.DS_Store``, AppleDouble ``._*``, ...), ``image``,
    ``text``, ``playlist`` or ``other``."""
    low = name.lower()
    if low in SYSTEM_NAMES or low.startswith("._"):
        return "system"
    for kind, suffixes in IGNORED_KINDS.items():
        if low.endswith(suffixes):
            return kind
    return "other"
