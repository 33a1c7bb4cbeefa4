"""Drawing helpers shared by the diagrams of chapters 1-7: boxes, arrows, a frame.

The style is the one of `diagrams.transformer`: a transparent background, strokes
and text in a mid-grey that reads on white and on black, fills in mid-tones with
black text inside them. `texts` lists every string a diagram draws (for tests and
alt text); `overlapping_texts` finds labels that collide once drawn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

INK = "#808080"  # strokes and text: mid-grey reads on white and on black
COLOURS = {
    "input": "#a0a0a0",
    "encoder": "#4a90d0",
    "decoder": "#50a878",
    "context": "#e0a030",
    "score": "#d06050",
    "output": "#c080a0",
    "head": "#9070c0",
}
HEAD_COLOURS = ["#4a90d0", "#e0a030", "#50a878", "#d06050", "#9070c0", "#c080a0",
                "#a0a040", "#40a0a0"]
FONT = 9  # the smallest size: 9 pt at the book's width of about 700 px (7 inches)
WIDTH = 7.0  # inches: every figure fits the book's column without shrinking


def frame(width: float, height: float, xlim, ylim) -> tuple[Figure, plt.Axes]:
    """A figure of one axes filling it, without ticks or background, in data units."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    fig.patch.set_alpha(0)
    ax.patch.set_alpha(0)
    ax.set_axis_off()
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    return fig, ax


def transparent(fig: Figure) -> Figure:
    """Make a figure and all its axes transparent; return it."""
    fig.patch.set_alpha(0)
    for ax in fig.axes:
        ax.patch.set_alpha(0)
    return fig


def box(ax, x, y, text, colour, width=1.0, height=0.5, fontsize=FONT, alpha=0.85,
        dashed=False, text_colour=None):
    """A rounded box centred on (x, y), labelled `text`; its gid is the text (for tests).

    A nearly opaque mid-tone fill carries black text on light and dark pages alike; a
    faint fill (alpha < 0.5) lets the page show through, so its text is in the ink grey."""
    if text_colour is None:
        text_colour = "black" if alpha >= 0.5 else INK
    patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                           boxstyle="round,pad=0.0,rounding_size=0.06",
                           facecolor=colour, edgecolor=INK, alpha=alpha, linewidth=1.1,
                           linestyle="--" if dashed else "-", gid=text)
    ax.add_patch(patch)
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=text_colour)
    return patch


def arrow(ax, start, end, colour=INK, style="-|>", connection="arc3", dashed=False,
          width=1.1, alpha=1.0, shrink=1.0):
    """An arrow from `start` to `end` (data coordinates)."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=9, color=colour,
                                 connectionstyle=connection, linewidth=width, alpha=alpha,
                                 linestyle="--" if dashed else "-", shrinkA=shrink,
                                 shrinkB=shrink))


def note(ax, x, y, text, ha="center", va="center", fontsize=FONT, colour=INK, **kwargs):
    """A text in the ink colour (a label that is not inside a box)."""
    return ax.text(x, y, text, ha=ha, va=va, fontsize=fontsize, color=colour, **kwargs)


def texts(fig: Figure) -> list[str]:
    """Every string drawn in `fig`: texts, titles, axis labels, tick and legend labels."""
    import matplotlib.text

    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def overlapping_texts(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of visible texts whose drawn extents overlap, and texts that leave the figure."""
    import matplotlib.text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    extents = [(t.get_text(), t.get_window_extent(renderer)) for t in shown]
    pairs = []
    for i, (a, box_a) in enumerate(extents):
        for b, box_b in extents[i + 1:]:
            if box_a.overlaps(box_b):
                pairs.append((a, b))
    width, height = fig.canvas.get_width_height()
    for text, extent in extents:
        if extent.x0 < -1 or extent.y0 < -1 or extent.x1 > width + 1 or extent.y1 > height + 1:
            pairs.append((text, "<outside the figure>"))
    return pairs


def smallest_font(fig: Figure) -> float:
    """The smallest font size (points) of any text drawn in `fig`."""
    import matplotlib.text

    return min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text())


def labels_outside_their_boxes(fig: Figure) -> list[str]:
    """The labels of boxes (patches whose gid is the label) that do not fit inside them."""
    import matplotlib.text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = {}
    for ax in fig.axes:
        for patch in ax.patches:
            if patch.get_gid():
                boxes.setdefault(patch.get_gid(), []).append(patch.get_window_extent(renderer))
    bad = []
    for text in fig.findobj(matplotlib.text.Text):
        label = text.get_text()
        if label not in boxes:
            continue
        extent = text.get_window_extent(renderer)
        centre = extent.get_points().mean(0)
        holders = [b for b in boxes[label] if b.contains(*centre)]
        if not holders or not any(b.x0 <= extent.x0 and extent.x1 <= b.x1 and
                                  b.y0 <= extent.y0 and extent.y1 <= b.y1 for b in holders):
            bad.append(label)
    return bad
