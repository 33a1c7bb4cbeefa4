"""Tests of attnbook.diagrams.cost: the figures draw and carry their labelled parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from attnbook.cost import H100_SXM, H200_SXM  # noqa: E402
from attnbook.diagrams.cost import (  # noqa: E402
    MATMUL_COLOR,
    PLAIN_COLOR,
    TILED_COLOR,
    attention_traffic,
    measured_intensity,
    roofline,
)


def texts(fig) -> str:
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return " | ".join(found)


def test_attention_traffic_shows_both_algorithms():
    fig = attention_traffic()
    shown = texts(fig)
    for part in ["S\nN×N", "P\nN×N", "write N²", "read N²", "1: S = QKᵀ/√d", "3: O = PV",
                 "HBM", "on chip", "plain attention", "tiled", "B×B tile",
                 "2Nd(1 + N/B_q) elements; 4Nd if K, V stay in cache"]:
        assert part in shown, part
    assert fig.get_facecolor()[3] == 0  # transparent
    plt.close(fig)


def row(impl, n, tflops, dtype="bfloat16"):
    return {"impl": impl, "B": 2, "H": 8, "N": n, "d": 64, "causal": False, "pass": "forward",
            "dtype": dtype, "ms": 1.0, "tflops": tflops, "machine": "test"}


def test_roofline_draws_the_roofs_the_points_and_measured_rows():
    points = {"plain": 32.0, "tiled": 128.0, "matmul": 1365.0}
    rows = [row("plain_torch", 4096, 90.0), row("flash_triton", 4096, 300.0),
            row("flash_triton", 8192, 350.0)]
    fig = roofline(points, H100_SXM, [H200_SXM], measured=rows)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "NVIDIA H100 SXM: 989 TFLOP/s, 3.35 TB/s" in labels
    assert "NVIDIA H200 SXM: 4.80 TB/s" in labels
    assert "plain: 32 FLOP/B" in labels and "matmul: 1365 FLOP/B" in labels
    measured = {line.get_label(): line for line in ax.get_lines()
                if line.get_label().startswith("measured")}
    assert set(measured) == {"measured: plain_torch", "measured: flash_triton"}
    assert list(measured["measured: flash_triton"].get_ydata()) == [300.0, 350.0]
    assert "ridge: 295 FLOP/B" in texts(fig)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    plt.close(fig)
    plt.close(roofline(points))  # without measured rows


def test_measured_intensity_uses_the_plain_or_the_tiled_model():
    assert measured_intensity(row("plain_torch", 4096, 1.0)) == pytest.approx(
        4096 * 64 / (2 * (4096 + 64)))
    assert measured_intensity(row("flash_triton", 4096, 1.0)) == pytest.approx(124.1, abs=0.1)


def test_roofline_colours_points_by_kind():
    points = {"plain attention": 32.0, "plain, as implemented": 5.3,
              "tiled, blocks of 128 queries": 124.0, "tiled, K and V read once": 2048.0,
              "matmul 4096 x 4096 x 4096": 1365.0}
    fig = roofline(points)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["matmul 4096 x 4096 x 4096: 1365 FLOP/B"].get_color() == MATMUL_COLOR
    assert lines["tiled, K and V read once: 2048 FLOP/B"].get_color() == TILED_COLOR
    assert lines["tiled, blocks of 128 queries: 124 FLOP/B"].get_color() == TILED_COLOR
    assert lines["plain, as implemented: 5.3 FLOP/B"].get_color() == PLAIN_COLOR
    tiled = [lines[k].get_marker() for k in lines if k.startswith("tiled")]
    assert len(set(tiled)) == 2  # same colour, different markers
    plt.close(fig)


def test_measured_plain_rows_use_the_package_byte_count():
    # the package's plain attention in bf16: 48 bytes per score, intensity about d / 12
    assert measured_intensity(row("plain", 16384, 1.0)) == pytest.approx(64 / 12, rel=0.01)
    assert measured_intensity(row("plain", 16384, 1.0, "float32")) == pytest.approx(
        4 * 64 / 40, rel=0.01)
