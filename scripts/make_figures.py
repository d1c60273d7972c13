"""The course's diagrams, drawn by code so that they stay editable: change a label or a box here and run

    python scripts/make_figures.py

to rewrite the SVG files in book/_static/figures/ (tests/test_figures.py checks that the files are what this script
writes, and that each chapter shows its figure with a caption and alt text). Plain SVG: boxes, arrows and text,
no fonts or tools beyond a browser."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parents[1] / "book" / "_static" / "figures"

# a small palette, readable in print and for the common colour-vision deficiencies
BLUE, ORANGE, GREEN, GREY, PURPLE, RED = "#dbe9f6", "#fde3c8", "#d9f0d3", "#eeeeee", "#e8def3", "#f9d6d5"
INK = "#222222"


class Figure:
    """An SVG canvas with the few shapes the diagrams use."""

    def __init__(self, width: int, height: int, title: str):
        self.w, self.h, self.parts = width, height, []
        self.title = title

    def box(self, x, y, w, h, text, fill=BLUE, sub=None, dashed=False, rx=8, size=14):
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" '
                          f'stroke="{INK}" stroke-width="1.3"{dash}/>')
        cy = y + h / 2 + (-4 if sub else 5)
        self.text(x + w / 2, cy, text, size=size, weight="bold" if not sub else "bold")
        if sub:
            self.text(x + w / 2, cy + 17, sub, size=size - 3)
        return (x, y, w, h)

    def text(self, x, y, s, size=13, anchor="middle", weight="normal", italic=False, color=INK):
        style = ' font-style="italic"' if italic else ""
        self.parts.append(f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}"'
                          f'{style} fill="{color}">{escape(s)}</text>')

    def arrow(self, x1, y1, x2, y2, label=None, dashed=False, color=INK, dy=-7, dx=0, size=12, curve=0):
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        if curve:
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2 + curve
            d = f"M {x1} {y1} Q {mx} {my} {x2} {y2}"
        else:
            d = f"M {x1} {y1} L {x2} {y2}"
        self.parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"{dash} '
                          f'marker-end="url(#head)"/>')
        if label:
            lx, ly = (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy + (curve / 2 if curve else 0)
            self.text(lx, ly, label, size=size)

    def line(self, *points, dashed=False, color=INK):
        """A polyline without an arrowhead (the first legs of a routed arrow)."""
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        pts = " ".join(f"{x},{y}" for x, y in points)
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>')

    def svg(self) -> str:
        head = ('<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{INK}"/></marker></defs>')
        body = "\n  ".join(self.parts)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" width="{self.w}" '
                f'height="{self.h}" font-family="Helvetica, Arial, sans-serif" role="img">\n'
                f'  <title>{escape(self.title)}</title>\n  {head}\n'
                f'  <rect width="{self.w}" height="{self.h}" fill="white"/>\n  {body}\n</svg>\n')


def forward_reverse() -> Figure:
    f = Figure(780, 250, "The forward noising chain q and the learned reverse chain p_theta")
    xs = [20, 180, 340, 500, 660]
    labels = [("x₀", "data"), ("x₁", ""), ("x_t", ""), ("x_{T-1}", ""), ("x_T", "≈ N(0, I)")]
    fills = ["#ffffff", "#f2f2f2", "#d9d9d9", "#bdbdbd", "#9e9e9e"]
    for x, (name, sub), fill in zip(xs, labels, fills):
        f.box(x, 95, 100, 60, name, fill=fill, sub=sub or None, size=16)
    for a, b in zip(xs[:-1], xs[1:]):
        f.arrow(a + 100, 108, b, 108, curve=-30)
        f.arrow(b, 142, a + 100, 142, curve=30, color="#1f5fa8")
    f.text(390, 30, "forward q(x_t | x_{t-1}) = N(√(1−β_t) x_{t-1}, β_t I): fixed, adds a little noise",
           size=13)
    f.text(390, 50, "closed form: q(x_t | x₀) = N(√ᾱ_t x₀, (1−ᾱ_t) I), so any x_t is one step from x₀",
           size=12, italic=True)
    f.text(390, 215, "reverse p_θ(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t² I): learned, removes it step by step",
           size=13, color="#1f5fa8")
    f.text(390, 235, "μ_θ comes from the network's noise prediction ε_θ(x_t, t) (eq. 11)", size=12, italic=True,
           color="#1f5fa8")
    return f


def simclr() -> Figure:
    f = Figure(780, 260, "SimCLR: two augmented views, a shared encoder and projection head, NT-Xent")
    f.box(10, 100, 80, 56, "x", fill=GREY, sub="image", size=16)
    for y, v, t, zname in ((30, "x̃_i", "t ~ 𝒯", "z_i"), (170, "x̃_j", "t′ ~ 𝒯", "z_j")):
        f.arrow(90, 128, 150, y + 28, label=t, dy=-6 if y < 100 else 16, dx=-28)
        f.box(150, y, 80, 56, v, fill="#ffffff", sub="view", size=15)
        f.arrow(230, y + 28, 280, y + 28)
        f.box(280, y, 120, 56, "encoder f", fill=BLUE, sub="ResNet / ConvNet")
        f.arrow(400, y + 28, 450, y + 28, label="h")
        f.box(450, y, 120, 56, "head g", fill=ORANGE, sub="MLP")
        f.arrow(570, y + 28, 620, 110 if y < 100 else 150, label=zname, dy=-8 if y < 100 else 20)
    f.text(340, 128, "shared weights", size=12, italic=True)
    f.arrow(340, 110, 340, 90, dashed=True)
    f.arrow(340, 140, 340, 166, dashed=True)
    f.box(620, 80, 150, 96, "NT-Xent", fill=GREEN, sub="pull z_i, z_j together,")
    f.text(695, 158, "push 2N−2 others away", size=11)
    f.text(390, 250, "after training, h (not z) is the representation used downstream", size=12, italic=True)
    return f


def moco() -> Figure:
    f = Figure(780, 290, "MoCo: a query encoder, a momentum key encoder and a queue of negative keys")
    f.box(10, 110, 80, 56, "x", fill=GREY, sub="image", size=16)
    f.arrow(90, 130, 140, 58, label="view 1", dy=-4, dx=-26)
    f.arrow(90, 148, 140, 218, label="view 2", dy=18, dx=-26)
    f.box(140, 30, 180, 56, "query encoder f_q", fill=BLUE, sub="θ_q: gradient step")
    f.box(140, 190, 180, 56, "key encoder f_k", fill=PURPLE, sub="θ_k ← m θ_k + (1−m) θ_q")
    f.arrow(320, 58, 420, 58, label="q")
    f.arrow(320, 205, 440, 86, label="k₊ (no gradient)", dx=-28, dy=-4)
    f.arrow(320, 232, 420, 232, label="enqueue k₊", dy=18)
    f.box(420, 30, 170, 56, "logits", fill=GREEN, sub="q·k₊/τ and q·k⁻/τ")
    f.box(420, 190, 170, 56, "queue of K keys", fill=ORANGE, sub="negatives k⁻, oldest leave")
    f.arrow(540, 190, 540, 86, label="k⁻", dx=14, dy=4)
    f.arrow(590, 58, 620, 58)
    f.box(620, 30, 150, 56, "InfoNCE", fill=GREEN, sub="cross-entropy, class 0")
    f.text(390, 280, "negatives come from past batches: many of them, from an encoder that changes slowly",
           size=12, italic=True)
    return f


def unet() -> Figure:
    f = Figure(780, 330, "The U-Net: a down path, a bottleneck, an up path with skip connections, time everywhere")
    levels = [(40, "28×28, C", "ResBlocks"), (120, "14×14, 2C", "ResBlocks"), (200, "7×7, 2C", "ResBlocks + attention")]
    for i, (y, size, what) in enumerate(levels):
        f.box(60 + 40 * i, y, 170, 56, size, fill=BLUE, sub=what)
        f.box(550 - 40 * i, y, 170, 56, size, fill=ORANGE, sub=what)
        f.arrow(230 + 40 * i, y + 28, 550 - 40 * i, y + 28, label="skip (concatenate)", dashed=True)
        if i < 2:
            f.arrow(145 + 40 * i, y + 56, 165 + 40 * i, y + 80, label="down", dx=-22, dy=4)
            f.arrow(655 - 40 * i, y + 80, 635 - 40 * i, y + 56, label="up", dx=22, dy=4)
    f.box(300, 270, 180, 50, "bottleneck", fill=PURPLE, sub="ResBlock, attention, ResBlock")
    f.arrow(225, 256, 300, 280)
    f.arrow(480, 280, 555, 256)
    f.box(10, 270, 150, 50, "e(t)", fill=GREEN, sub="time embedding, MLP")
    f.text(85, 262, "into every ResBlock (FiLM)", size=11, italic=True)
    f.text(390, 20, "x_t in (top left), the prediction out (top right); the skips carry what the bottleneck cannot",
           size=12, italic=True)
    return f


def dit_block() -> Figure:
    f = Figure(780, 470, "A DiT block with adaLN-Zero: the condition regresses shift, scale and gate of each branch")
    cx = 260
    f.box(cx - 110, 420, 220, 40, "tokens x (N × d)", fill=GREY)
    steps = [(360, "LayerNorm (no affine)", GREY), (305, "scale (1+γ₁), shift β₁", ORANGE),
             (250, "multi-head self-attention", BLUE), (195, "gate α₁", ORANGE)]
    y_prev = 420
    for y, t, fill in steps:
        f.arrow(cx, y_prev, cx, y + 40)
        f.box(cx - 110, y, 220, 40, t, fill=fill)
        y_prev = y
    f.box(cx - 20, 150, 40, 32, "+", fill="#ffffff", size=18)
    f.arrow(cx, 195, cx, 182)
    f.line((cx - 110, 440), (cx - 150, 440), (cx - 150, 166), dashed=True)
    f.arrow(cx - 150, 166, cx - 20, 166, dashed=True)
    f.text(cx - 160, 300, "residual", size=11, italic=True, anchor="end")
    f.box(cx - 110, 95, 220, 40, "LN, (1+γ₂), β₂, MLP, gate α₂", fill=BLUE)
    f.arrow(cx, 150, cx, 135)
    f.box(cx - 20, 45, 40, 32, "+", fill="#ffffff", size=18)
    f.arrow(cx, 95, cx, 77)
    f.line((cx + 20, 166), (cx + 150, 166), (cx + 150, 61), dashed=True)
    f.arrow(cx + 150, 61, cx + 20, 61, dashed=True)
    f.text(cx + 160, 120, "residual", size=11, italic=True, anchor="start")
    f.arrow(cx, 45, cx, 20)
    f.text(cx + 10, 28, "to the next block", size=11, anchor="start", italic=True)
    f.box(520, 380, 230, 56, "condition c", fill=GREEN, sub="e(t) + label embedding")
    f.arrow(635, 380, 635, 330)
    f.box(520, 270, 230, 60, "SiLU, linear W c + b", fill=PURPLE, sub="zero-initialised: W = 0, b = 0")
    f.arrow(635, 270, 635, 230)
    f.box(520, 180, 230, 50, "β₁, γ₁, α₁, β₂, γ₂, α₂", fill=ORANGE, sub="six vectors of width d")
    f.arrow(520, 205, cx + 112, 318, dashed=True, color="#b35c00")
    f.arrow(520, 200, cx + 112, 212, dashed=True, color="#b35c00")
    f.arrow(520, 195, cx + 112, 115, dashed=True, color="#b35c00")
    f.text(635, 120, "at initialisation every gate α is 0:", size=12, italic=True)
    f.text(635, 138, "each block is the identity", size=12, italic=True)
    return f


def latent() -> Figure:
    f = Figure(780, 300, "Latent diffusion: an autoencoder compresses, diffusion runs on its latents")
    f.text(20, 25, "training", size=13, anchor="start", weight="bold")
    f.box(20, 40, 90, 56, "x", fill=GREY, sub="28×28×1", size=16)
    f.arrow(110, 68, 160, 68)
    f.box(160, 40, 110, 56, "encoder 𝓔", fill=BLUE, sub="frozen")
    f.arrow(270, 68, 320, 68, label="z₀")
    f.box(320, 40, 130, 56, "add noise", fill=GREY, sub="z_t = √ᾱ z₀ + √(1−ᾱ) ε")
    f.arrow(450, 68, 500, 68)
    f.box(500, 40, 150, 56, "denoiser", fill=ORANGE, sub="DiT / U-Net on 7×7×4")
    f.arrow(650, 68, 690, 68)
    f.text(735, 72, "loss on ε", size=12)
    f.box(540, 120, 110, 40, "label y or ∅", fill=GREEN, size=12)
    f.arrow(595, 120, 585, 96)
    f.text(20, 195, "sampling", size=13, anchor="start", weight="bold")
    f.box(20, 210, 110, 56, "z_T ~ N(0, I)", fill=GREY, sub="7×7×4")
    f.arrow(130, 238, 200, 238)
    f.box(200, 210, 220, 56, "T′ denoising steps", fill=ORANGE, sub="DDIM / DPM-Solver, guidance w")
    f.arrow(420, 238, 480, 238, label="z₀")
    f.box(480, 210, 120, 56, "decoder 𝓓", fill=BLUE, sub="once, at the end")
    f.arrow(600, 238, 650, 238)
    f.box(650, 210, 110, 56, "x̂", fill=GREY, sub="28×28×1", size=16)
    f.text(390, 292, "every network call works on 49 positions instead of 784: the saving grows with image size",
           size=12, italic=True)
    return f


def repa() -> Figure:
    f = Figure(780, 300, "REPA: a hidden state of the denoiser is aligned with a frozen self-supervised encoder's features")
    f.box(10, 30, 90, 56, "x₀", fill=GREY, sub="pixels", size=16)
    f.arrow(100, 58, 160, 58)
    f.box(155, 30, 180, 56, "frozen SSL encoder f", fill=PURPLE, sub="chapter 02's SimCLR")
    f.arrow(330, 58, 400, 58, label="y*_n")
    f.box(400, 30, 170, 56, "alignment loss", fill=GREEN, sub="−cos(h_φ(h_n), y*_n)")
    f.box(10, 190, 90, 56, "z_t", fill=GREY, sub="noisy latent", size=16)
    f.arrow(100, 218, 150, 218)
    f.box(150, 190, 140, 56, "blocks 1..k", fill=ORANGE, sub="U-Net or DiT")
    f.arrow(290, 218, 340, 218)
    f.box(340, 190, 150, 56, "blocks k+1..L", fill=ORANGE)
    f.arrow(490, 218, 540, 218)
    f.box(540, 190, 120, 56, "L_diff", fill=GREEN, sub="v, min-SNR")
    f.arrow(315, 218, 315, 150, label="h^(k)", dx=24, dy=0)
    f.box(255, 110, 120, 40, "projector h_φ", fill=BLUE, size=12)
    f.arrow(375, 125, 470, 86)
    f.box(620, 100, 150, 56, "L = L_diff + λ L_align", fill="#ffffff", size=12)
    f.arrow(570, 58, 640, 100)
    f.arrow(620, 190, 660, 156)
    f.text(390, 285, "the encoder and the image x₀ are used only in training: sampling is the plain denoiser",
           size=12, italic=True)
    return f


FIGURES = {"forward_reverse": forward_reverse, "simclr": simclr, "moco": moco, "unet": unet,
           "dit_block": dit_block, "latent_diffusion": latent, "repa": repa}


def render() -> dict[str, str]:
    """Every figure's SVG text by file stem."""
    return {name: make().svg() for name, make in FIGURES.items()}


if __name__ == "__main__":
    for name, svg in render().items():
        (HERE / f"{name}.svg").write_text(svg)
        print(f"wrote {HERE / (name + '.svg')}")
