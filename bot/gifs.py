"""Animated GIFs as the model accepts them: it takes JPEG/PNG/WebP images and MP4/MOV
videos, no GIF. A GIF becomes an H.264 MP4 (as Tenor and Giphy serve theirs), which keeps
its motion and its timing; a still frame would lose what a GIF is usually sent for."""

from __future__ import annotations

import asyncio
import io
from fractions import Fraction

from bot.domain.errors import AttachmentError

# Bounds on the work one GIF may cause (a small file can expand to many large frames).
MAX_FRAMES = 600
MAX_SIDE = 720  # larger GIFs are scaled down to this on their longer side
MAX_SOURCE_PIXELS = 4096 * 4096
_MS = Fraction(1, 1000)


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)  # H.264 in 4:2:0 needs even sides


def gif_to_mp4(data: bytes) -> bytes:
    """The GIF's frames, at their own times, as an MP4; raises ``ValueError`` for a file
    that is not a readable GIF."""
    # Loaded with the first GIF, not at start: FFmpeg's libraries take some 18 MB.
    import av

    try:
        return _converted(data)
    except av.FFmpegError as exc:
        raise ValueError(str(exc)) from exc


# Cisco's OpenH264 (BSD) where the PyAV wheel carries it (up to 16.x), else x264, which every
# PyAV wheel carries (from 17.x the only H.264 encoder in them). Either is H.264 in MP4.
H264_ENCODERS = ("libopenh264", "libx264")


def _h264_encoder() -> str:
    import av  # already loaded by gif_to_mp4

    for name in H264_ENCODERS:
        if name in av.codecs_available:
            return name
    raise ValueError("no H.264 encoder in this PyAV build")


def _converted(data: bytes) -> bytes:
    import av  # already loaded by gif_to_mp4

    out = io.BytesIO()
    with av.open(io.BytesIO(data), "r", format="gif") as source:
        if not source.streams.video:
            raise ValueError("no picture in it")
        video = source.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height or width * height > MAX_SOURCE_PIXELS:
            raise ValueError(f"unsupported GIF size {width}x{height}")
        scale = min(1.0, MAX_SIDE / max(width, height))
        size = (_even(width * scale), _even(height * scale))
        with av.open(out, "w", format="mp4") as target:
            stream = target.add_stream(_h264_encoder(), rate=1000)
            if not isinstance(stream, av.VideoStream):
                raise ValueError("no H.264 encoder")  # typing: a codec by name may be any
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = _MS
            last = -1
            for index, frame in enumerate(source.decode(video)):
                if index >= MAX_FRAMES:
                    break
                shown = frame.reformat(width=size[0], height=size[1], format="yuv420p")
                # Each frame at its own time (GIF delays vary), never two at the same.
                pts = max(last + 1, round((frame.time or 0) * 1000))
                shown.pts, shown.time_base, last = pts, _MS, pts
                target.mux(stream.encode(shown))
            if last < 0:
                raise ValueError("the GIF has no frame")
            target.mux(stream.encode(None))
    return out.getvalue()


# Conversions at once, over all turns: each keeps a core busy for a moment.
_converting = asyncio.Semaphore(2)


async def gif_as_mp4(data: bytes, name: str) -> bytes:
    """:func:`gif_to_mp4` off the event loop; an unreadable GIF is left out, named."""
    try:
        async with _converting:
            return await asyncio.to_thread(gif_to_mp4, data)
    except ValueError as exc:
        raise AttachmentError(name, "it is not a GIF that could be read") from exc
