"""A PyTorch proxy of the Keras training recipe, to compare recipes quickly on a GPU machine.

K copies of the VGG width-20 net train at once as grouped convolutions, each with its own
hyper-parameters, seed, data order and augmentation: same layers and initialisation
(Glorot), BatchNorm (momentum 0.9, eps 1e-3), stage dropout 0.1/0.2, coupled L2 on the conv
kernels, Adam with 2 warm-up epochs from lr/10 and cosine decay to 1 % of lr, the same
augmentation ops and ranges (`AugmentConfig` x strength), best PublicTest epoch, then the
BatchNorm re-measurement kept only if PublicTest does not drop. It is not the shipped trainer
(TensorFlow does not run on the GPU machine): its figures only rank recipes, which the Keras
trainer then has to confirm on the CPU. Input: the folder `pack_fer.py` writes.

Per-model keys of --configs (defaults = the committed recipe): seed, w (FER2013 weight of
the mixed targets), aug (augmentation strength), drop (head dropout), l2, lr, ls (label
smoothing), mixup (probability of a Beta(0.4, 0.4) mixup batch), wd (decoupled decay),
fold ("i/K": leave out the Training faces whose fold key % K == i, as `fit --holdout-fold`
does, identical images sharing a key; needs a pack with fold keys).

As a teacher stage, `--probs-out FILE` writes every model's flip-averaged probabilities on all
packed faces (after the best-epoch and BatchNorm choice); `soft_labels.py` turns them into the
soft-label file the CPU student stage reads (`emotion-edge-train fit --teacher-labels`).
"""

import argparse
import json
import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--configs", required=True, help="JSON list of per-model dicts")
p.add_argument("--epochs", type=int, default=80)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--widths", default="20,40,80,160")
p.add_argument("--data", default=".gpu", help="folder written by pack_fer.py")
p.add_argument("--out", default="result.json")
p.add_argument("--limit-train", type=int, default=0)
p.add_argument("--amp", action="store_true")
p.add_argument("--probs-out", default="", help="also write each model's probabilities (.npz)")
p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
args = p.parse_args()
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
dev = args.device

DEFAULT = dict(
    seed=0, w=0.7, aug=0.6, drop=0.3, l2=5e-5, lr=2e-3, ls=0.0, mixup=0.0, wd=0.0, fold=""
)
cfgs = [{**DEFAULT, **c} for c in json.loads(args.configs)]
K = len(cfgs)


def col(key):
    return torch.tensor([float(c[key]) for c in cfgs], device=dev)


# ---------------------------------------------------------------- data
meta = np.load(f"{args.data}/meta.npz")
raw = np.fromfile(f"{args.data}/images.webps", np.uint8)
imgs, off = [], 0
for n in meta["lens"]:
    m = cv2.imdecode(raw[off : off + n], cv2.IMREAD_GRAYSCALE)
    off += n
    rows, cols = m.shape[0] // 48, m.shape[1] // 48  # the mosaic layout of pack_fer.py
    imgs.append(m.reshape(rows, 48, cols, 48).transpose(0, 2, 1, 3).reshape(-1, 48, 48))
ntr, nva, nte = (int(v) for v in meta["n"])
allx = torch.from_numpy(np.concatenate(imgs)[: ntr + nva + nte]).to(dev)
xtr, xva, xte = allx[:ntr], allx[ntr : ntr + nva], allx[ntr + nva :]
y_fer = torch.from_numpy(meta["y_fer"]).to(dev)
y_plus = torch.from_numpy(meta["y_plus"]).to(dev)
y_val = torch.from_numpy(meta["y_val"]).to(dev)
y_test = torch.from_numpy(meta["y_test"]).to(dev)
if args.limit_train:
    ntr = args.limit_train
    xtr, y_fer, y_plus = xtr[:ntr], y_fer[:ntr], y_plus[:ntr]
NC = y_fer.shape[1]


def train_pool(fold):
    """Indices into the packed Training faces that a model with this fold may train on."""
    if not fold:
        return torch.arange(ntr, device=dev)
    if "fold_keys" not in meta:
        raise SystemExit("a fold needs a pack with fold keys: re-run pack_fer.py")
    i, k = (int(v) for v in fold.split("/"))
    keys = torch.from_numpy(meta["fold_keys"][:ntr]).to(dev)
    return torch.nonzero(keys % k != i).flatten()


pools = [train_pool(c["fold"]) for c in cfgs]
n_epoch = min(len(pool) for pool in pools)  # faces per model per epoch (folds differ by a few)

# ---------------------------------------------------------------- model (K nets as groups)
widths = [int(v) for v in args.widths.split(",")]
gen = torch.Generator(device="cpu").manual_seed(int(cfgs[0]["seed"]) * 7919 + K)


def glorot(shape, fan_in, fan_out):
    lim = math.sqrt(6.0 / (fan_in + fan_out))
    return ((torch.rand(shape, generator=gen) * 2 - 1) * lim).to(dev).requires_grad_()


params, convs, bns = [], [], []
cin = 1
for wdt in widths:
    for _ in range(2):
        w = glorot((K * wdt, cin, 3, 3), cin * 9, wdt * 9)
        g = torch.ones(K * wdt, device=dev, requires_grad=True)
        b = torch.zeros(K * wdt, device=dev, requires_grad=True)
        rm = torch.zeros(K * wdt, device=dev)
        rv = torch.ones(K * wdt, device=dev)
        convs.append(w)
        bns.append([g, b, rm, rv])
        params += [w, g, b]
        cin = wdt
C = widths[-1]
dense_w = glorot((K, C, NC), C, NC)
dense_b = torch.zeros(K, NC, device=dev, requires_grad=True)
params += [dense_w, dense_b]
stage_drop = [0.0, 0.0, 0.1, 0.2]
# per-model rates as tensors once, not rebuilt from Python lists on every forward pass
stage_drop_k = [torch.full((K,), rate, device=dev) for rate in stage_drop]
drop_k = col("drop")


def dropout(x, p_k, train):
    # x [B, K*C, ...]; p_k [K]
    if not train:
        return x
    B = x.shape[0]
    shp = (B, K, x.shape[1] // K) + tuple(x.shape[2:])
    keep = (1 - p_k).view((1, K) + (1,) * (len(shp) - 2))
    mask = (torch.rand(shp, device=dev) < keep).float() / keep
    return (x.view(shp) * mask).view_as(x)


def forward(x, train, bn_momentum=0.1, drop_off=False):
    """x: [B, K, 48, 48] -> logits [B, K, NC]."""
    h, j = x, 0
    for s, _ in enumerate(widths):
        for _ in range(2):
            h = F.conv2d(h, convs[j], padding=1, groups=K)
            g, b, rm, rv = bns[j]
            h = F.batch_norm(h, rm, rv, g, b, training=train, momentum=bn_momentum, eps=1e-3)
            h = F.relu(h)
            j += 1
        h = F.max_pool2d(h, 2)
        if stage_drop[s] and not drop_off:
            h = dropout(h, stage_drop_k[s], train)
    h = h.mean((2, 3))  # [B, K*C]
    if not drop_off:
        h = dropout(h, drop_k, train)
    h = h.view(-1, K, C)
    return torch.einsum("bkc,kcn->bkn", h, dense_w) + dense_b


# ---------------------------------------------------------------- augmentation
def augment(x, s):
    """x [N, 48, 48] float in [0,1], s [N] strength -> augmented."""
    N, S = x.shape[0], 48
    u = lambda lo, hi: torch.rand(N, device=dev) * (hi - lo) + lo  # noqa: E731
    theta = u(-1, 1) * 15 * s * math.pi / 180
    zoom = 1 + u(-1, 1) * 0.15 * s
    shear = u(-1, 1) * 0.10 * s
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0)
    tx = u(-1, 1) * 0.10 * s * S
    ty = u(-1, 1) * 0.10 * s * S
    cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom
    m00, m01 = cos * flip, cos * shear - sin
    m10, m11 = sin * flip, sin * shear + cos
    c = (S - 1) / 2
    a2 = c - m00 * c - m01 * c + tx
    b2 = c - m10 * c - m11 * c + ty
    r = torch.arange(S, device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    xin = m00[:, None, None] * xx + m01[:, None, None] * yy + a2[:, None, None]
    yin = m10[:, None, None] * xx + m11[:, None, None] * yy + b2[:, None, None]
    grid = torch.stack([xin, yin], -1) * (2 / (S - 1)) - 1
    x = F.grid_sample(x[:, None], grid, "bilinear", "reflection", align_corners=True)
    sh = (N, 1, 1, 1)
    s4 = s.view(sh)
    uu = lambda lo, hi: torch.rand(sh, device=dev) * (hi - lo) + lo  # noqa: E731
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + uu(-1, 1) * 0.3 * s4) + mean
    x = x + uu(-1, 1) * 0.15 * s4
    x = x.clamp(0, 1)
    log_g = torch.log(1 + 0.4 * s4)
    x = torch.pow(x + 1e-6, torch.exp(uu(-1, 1) * log_g))
    dark = torch.where(uu(0, 1) < 0.15 * s4, uu(0.3, 0.7), torch.ones(sh, device=dev))
    x = x * dark
    cy, cx = uu(0, S), uu(0, S)
    inside = ((r.view(1, 1, S, 1) - cy).abs() < 6) & ((r.view(1, 1, 1, S) - cx).abs() < 6)
    apply = uu(0, 1) < 0.3 * s4
    x = torch.where(inside & apply, x.mean((2, 3), keepdim=True), x)
    return x.clamp(0, 1)[:, 0]


# ---------------------------------------------------------------- optimiser (per-model lr)
lr_k, l2_k, wd_k, w_k, aug_k = col("lr"), col("l2"), col("wd"), col("w"), col("aug")
ls_k, mix_k = col("ls"), col("mixup")
steps = -(-n_epoch // args.batch)
total = args.epochs * steps
warm = min(2 * steps, total - 1)


def lr_factor(t):
    if t < warm:
        return 0.1 + 0.9 * t / warm
    d = (t - warm) / (total - warm)
    return 0.99 * 0.5 * (1 + math.cos(math.pi * min(d, 1.0))) + 0.01


def per_model(t, p):
    """Broadcast a [K] tensor over parameter p's model axis."""
    if p is dense_w or p is dense_b:
        return t.view((K,) + (1,) * (p.dim() - 1))
    n = p.shape[0] // K
    return t.repeat_interleave(n).view((-1,) + (1,) * (p.dim() - 1))


state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
lr_p = [per_model(lr_k, p) for p in params]
wd_p = [per_model(wd_k, p) for p in params]


def adam_step(t, f):
    b1, b2, eps = 0.9, 0.999, 1e-7
    with torch.no_grad():
        for p, (m, v), lr, wd in zip(params, state, lr_p, wd_p, strict=True):
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            mh = m / (1 - b1 ** (t + 1))
            vh = v / (1 - b2 ** (t + 1))
            p.sub_(lr * f * (mh / (vh.sqrt() + eps) + wd * p))
            p.grad = None


def l2_loss():
    tot = 0
    for w in convs:
        tot = tot + (w.view(K, -1) ** 2).sum(1)
    return tot  # [K]


# ---------------------------------------------------------------- eval
@torch.no_grad()
def accuracy(x, y):
    hits = torch.zeros(K, device=dev)
    for i in range(0, len(x), 512):
        xb = x[i : i + 512].float().div(255)[:, None].expand(-1, K, -1, -1)
        pred = forward(xb, False).argmax(-1)  # [B, K]
        hits += (pred == y[i : i + 512, None]).float().sum(0)
    return hits / len(x)


def snapshot():
    return [t.detach().clone() for t in tensors()]


def tensors():
    return params + [t for bn in bns for t in bn[2:]]


def select_into(dst, src, mask):
    """Per model: dst <- src where mask[k]."""
    with torch.no_grad():
        for d, s_ in zip(dst, src, strict=True):
            dv = d.view(K, -1)
            dv.copy_(torch.where(mask[:, None], s_.view(K, -1), dv))


@torch.no_grad()
def recalibrate():
    for bn in bns:
        bn[2].zero_()
        bn[3].fill_(1)
    n = 0
    for i in range(0, n_epoch, 64):
        idx = torch.stack([pool[i : min(i + 64, n_epoch)] for pool in pools])  # [K, B]
        xb = xtr[idx].float().div(255).transpose(0, 1)  # each model its own faces
        # cumulative average: momentum 1/(n+1) in torch's convention
        forward(xb, True, bn_momentum=1.0 / (n + 1), drop_off=True)
        n += 1


# ---------------------------------------------------------------- train
gens = [torch.Generator(device=dev).manual_seed(int(c["seed"])) for c in cfgs]
torch.manual_seed(int(cfgs[0]["seed"]))
best_val = torch.zeros(K, device=dev)
best_epoch = torch.zeros(K, device=dev)
best = snapshot()
t0, t = time.time(), 0
hist = []
for epoch in range(args.epochs):
    perms = torch.stack(
        [
            pool[torch.randperm(len(pool), device=dev, generator=g)[:n_epoch]]
            for pool, g in zip(pools, gens, strict=True)
        ]
    )  # [K, n_epoch]
    tr_hits = torch.zeros(K, device=dev)
    for st in range(steps):
        idx = perms[:, st * args.batch : (st + 1) * args.batch]  # [K, B]
        B = idx.shape[1]
        x = xtr[idx].float().div(255)  # [K, B, 48, 48]
        x = augment(x.view(-1, 48, 48), aug_k.repeat_interleave(B)).view(K, B, 48, 48)
        yt = w_k[:, None, None] * y_fer[idx] + (1 - w_k[:, None, None]) * y_plus[idx]
        yt = yt * (1 - ls_k[:, None, None]) + ls_k[:, None, None] / NC
        # mixup with per-model probability mix_k (lambda ~ Beta(0.4, 0.4))
        use = (torch.rand(K, device=dev) < mix_k).float()
        lam = torch.distributions.Beta(0.4, 0.4).sample((K,)).to(dev)
        lam = torch.maximum(lam, 1 - lam) * use + (1 - use)
        perm = torch.randperm(B, device=dev)
        x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[:, perm]
        yt = lam[:, None, None] * yt + (1 - lam[:, None, None]) * yt[:, perm]
        with torch.autocast("cuda", torch.bfloat16, enabled=args.amp):
            logits = forward(x.transpose(0, 1), True).float()  # [B, K, NC]
        logp = F.log_softmax(logits, -1).transpose(0, 1)  # [K, B, NC]
        ce = -(yt * logp).sum(-1).mean(1)  # [K]
        loss = (ce + l2_k * l2_loss()).sum()
        loss.backward()
        adam_step(t, lr_factor(t))
        t += 1
        tr_hits += (logp.argmax(-1) == yt.argmax(-1)).float().sum(1)
    val = accuracy(xva, y_val)
    imp = val > best_val
    best_val = torch.where(imp, val, best_val)
    best_epoch = torch.where(imp, torch.full_like(best_epoch, epoch + 1), best_epoch)
    select_into(best, tensors(), imp)
    hist.append([round(v, 4) for v in val.tolist()])
    if epoch % 5 == 4 or epoch == args.epochs - 1 or args.epochs <= 3:
        print(
            f"epoch {epoch + 1} {time.time() - t0:.0f}s train {(tr_hits / n_epoch).mean():.3f} "
            f"val mean {val.mean():.4f} max {val.max():.4f}",
            flush=True,
        )

# ---------------------------------------------------------------- report
select_into(tensors(), best, torch.ones(K, dtype=torch.bool, device=dev))
val0, test0 = accuracy(xva, y_val), accuracy(xte, y_test)
before = snapshot()
recalibrate()
val1, test1 = accuracy(xva, y_val), accuracy(xte, y_test)
keep = val1 >= val0
select_into(tensors(), before, ~keep)  # each model ends in the state it reports


@torch.no_grad()
def all_probs():
    """[K, N, NC] flip-averaged probabilities on every packed face (Training, Pub, Priv)."""
    out = []
    for i in range(0, len(allx), 512):
        xb = allx[i : i + 512].float().div(255)[:, None].expand(-1, K, -1, -1)
        pr = F.softmax(forward(xb, False), -1) + F.softmax(forward(xb.flip(-1), False), -1)
        out.append((pr / 2).transpose(0, 1).cpu())
    return torch.cat(out, 1).numpy()


if args.probs_out:
    np.savez_compressed(
        args.probs_out,
        probs=all_probs().astype(np.float16),
        configs=np.array(json.dumps(cfgs)),
        widths=np.array(widths),
        epochs=np.array(args.epochs),
        fold_rule=np.array("image-group"),  # data.FOLD_RULE, checked by soft_labels.py --folds
    )
res = []
for k, c in enumerate(cfgs):
    res.append(
        {
            **c,
            "best_epoch": int(best_epoch[k]),
            "public_raw": round(float(val0[k]), 4),
            "private_raw": round(float(test0[k]), 4),
            "public_bn": round(float(val1[k]), 4),
            "private_bn": round(float(test1[k]), 4),
            "public": round(float(val1[k] if keep[k] else val0[k]), 4),
            "private": round(float(test1[k] if keep[k] else test0[k]), 4),
            "val_hist": [h[k] for h in hist],
        }
    )
json.dump({"epochs": args.epochs, "seconds": time.time() - t0, "runs": res}, open(args.out, "w"))
for r in res:
    short = {k: v for k, v in r.items() if k != "val_hist"}
    print(json.dumps(short))
print(f"total {time.time() - t0:.0f}s")
