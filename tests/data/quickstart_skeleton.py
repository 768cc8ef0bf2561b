"""PyTorch's Quickstart tutorial in plain PyTorch: what the tutorial is diffed against.

The code between the two ``# ---`` markers follows the structure and the names of
https://pytorch.org/tutorials/beginner/basics/quickstart_tutorial.html (data loaders,
model class, ``train`` and ``test`` loops, epochs, save, load, predict), written for
the tensors that ``scripts/pytorch_tutorial.py`` loads: only the data set comes from
elsewhere (torchvision's ``datasets.FashionMNIST`` in the original). It is test data
for ``tests/scripts/test_pytorch_tutorial.py``, which counts the lines that the
Bayesian tutorial changes, and runs as it stands (on the 8x8 digits, in seconds)::

    python tests/data/quickstart_skeleton.py
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torch_blue import datasets

x_train, y_train, x_test, y_test = datasets.load_digits(seed=0)
classes = [str(digit) for digit in range(10)]
epochs = 5
in_features = x_train[0].numel()
training_data, test_data = TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)
model_path = "model.pth"

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
class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(in_features, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


model = NeuralNetwork().to(device)
print(model)

loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)


def train(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        # Compute prediction error
        pred = model(X)
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
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
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
    pred = model(x)
    predicted, actual = classes[pred[0].argmax(0)], classes[y]
    print(f'Predicted: "{predicted}", Actual: "{actual}"')
# --- End of the Quickstart ---
