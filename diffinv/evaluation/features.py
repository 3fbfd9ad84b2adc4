r"""Fréchet distance in the feature space of a small classifier trained on the same data.

FD(P, Q) = ‖μ_P − μ_Q‖² + Tr(Σ_P + Σ_Q − 2 (Σ_P^{1/2} Σ_Q Σ_P^{1/2})^{1/2})  (Heusel et al. 2017),
with μ, Σ the mean and covariance of 32-dimensional penultimate-layer features. Inception features
(FID) mean nothing for 32×32 grayscale clothes, so, like "FID on MNIST" practice, we train a small
CNN classifier on the training labels (fashion-mnist has 10 classes): its features separate what
matters for the data. Without labels (emoji) the features are the images average-pooled to 4×4
(C·16 numbers: the coarse colour layout; a CNN with random weights and global pooling gave
features so uninformative that every FD was ≈ 0). The card says which. The estimate is biased
upwards at small n, so the card reports it next to the FD of n *real* training images to the test
images (the floor at that n).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffinv.data.base import batch_to_network
from diffinv.nn.unet import init_weights

FEATURES = 32


class SmallClassifier(nn.Module):
    """x (B, C, S, S) in [−1, 1] → logits (B, classes); ``features`` gives the (B, 32) penultimate layer."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1),
                                    nn.Conv2d(64, 64, 3, padding=1)])
        self.fc = nn.Linear(64, FEATURES)
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < len(self.convs) - 1:
                x = F.max_pool2d(x, 2)
        return F.relu(self.fc(x.mean((2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(images: Tensor, labels: Tensor | None, image_size: int, generator: torch.Generator,
                     steps: int = 600, batch_size: int = 128, lr: float = 2e-3) -> SmallClassifier:
    """Adam on cross-entropy over uint8 ``images`` (N, C, H, W) with int labels; random weights if None."""
    net = init_weights(SmallClassifier(images.shape[1], int(labels.max()) + 1 if labels is not None else 2),
                       generator)
    if labels is None:
        return net.eval()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        index = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x = batch_to_network(images, index, image_size, generator)
        loss = F.cross_entropy(net(x), labels[index])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def embed(net: SmallClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """(n, C, S, S) in [−1, 1] → (n, 32) float64 features."""
    return torch.cat([net.features(xb.float()) for xb in x.split(batch_size)]).double()


@torch.no_grad()
def accuracy(net: SmallClassifier, x: Tensor, labels: Tensor) -> float:
    return float(torch.cat([net(xb).argmax(1) for xb in x.split(500)]).eq(labels).float().mean())


POOLED_SIDE = 4


@torch.no_grad()
def pooled_pixels(x: Tensor) -> Tensor:
    """(n, C, S, S) in [−1, 1] → (n, C·16) float64: the images average-pooled to 4×4."""
    return F.adaptive_avg_pool2d(x.double(), POOLED_SIDE).flatten(1)


def frechet_distance(f: Tensor, g: Tensor) -> float:
    """FD between Gaussians fitted to features f (n, k) and g (m, k) (float64, eigh-based square roots)."""
    mu_f, mu_g = f.mean(0), g.mean(0)
    cov_f, cov_g = torch.cov(f.T), torch.cov(g.T)
    vals, vecs = torch.linalg.eigh(cov_f)
    root_f = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_f @ cov_g @ root_f).clamp_min(0).sqrt().sum()
    return float((mu_f - mu_g).pow(2).sum() + torch.trace(cov_f) + torch.trace(cov_g) - 2 * cross)
