#!/usr/bin/python3
"""
The batching benchmark's model: an MLP 64 -> 512 -> 512 -> 2 (Linear +
ReLU twice, Linear, Softmax), fixed seed, exported with torch.onnx.export
at opset 17 with a dynamic batch axis.  Heavy enough per row that the
backend, not nginx, limits one-row requests without batching.

usage: mlp_model.py OUT.onnx
"""

import sys

import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 512)
        self.l2 = torch.nn.Linear(512, 512)
        self.l3 = torch.nn.Linear(512, 2)

    def forward(self, x):
        x = torch.relu(self.l1(x))
        x = torch.relu(self.l2(x))
        return torch.softmax(self.l3(x), dim=1)


def main():
    torch.manual_seed(7)
    m = MLP().eval()
    torch.onnx.export(m, torch.randn(2, 64), sys.argv[1], opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"},
                                    "output": {0: "batch"}})


if __name__ == "__main__":
    main()
