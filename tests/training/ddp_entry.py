"""``icetools`` as torchrun starts it, with one process made to fail on demand (for test_distributed).

ICETOOLS_TEST_FAIL_RANK=1 makes that process's training windows unreadable after its first step, as a
corrupt scene read by one process only would.
"""

from __future__ import annotations

import os
import sys

from icetools.errors import DataError
import icetools.train_windows as train_windows

if os.environ.get("ICETOOLS_TEST_FAIL_RANK") == os.environ.get("RANK"):
    read = train_windows.RandomWindowDataset.__getitem__
    reads = [0]

    def failing(self, item):
        reads[0] += 1
        if reads[0] > 2:
            raise DataError(f"{self.scenes[item[0]][0]}: window {item[1]},{item[2]} cannot be read (test)")
        return read(self, item)

    train_windows.RandomWindowDataset.__getitem__ = failing

if __name__ == "__main__":
    from icetools.cli.app import main

    sys.argv = ["icetools", *sys.argv[1:]]
    main()
