"""Code edits for bench/speculative.py: the kind of request an editor or an agent sends, whose
answer repeats most of its input (what prompt-lookup speculation is for).

Two of each: rewrite a function with type hints, rename a variable through a file, fix a bug
in a snippet and return the whole snippet. Each is sent as an editor's edit request is: a system
message saying what the answer is (the whole edited code in one fenced block, nothing else), then
the user's message with the code in a fenced block first and the instruction after it (the shape
of Continue's and Aider's edit prompts). The earlier shape, the instruction before the code and no
system message, left SmolLM2-135M explaining (or guessing) in prose before any code on four of
the six: bench/README.md has both measured.
"""

from __future__ import annotations

TYPE_HINTS_INVENTORY = '''\
def restock(inventory, orders, minimum, supplier):
    """Orders more of every item that runs low once today's orders are taken out."""
    remaining = {}
    for item, count in inventory.items():
        ordered = sum(order["count"] for order in orders if order["item"] == item)
        remaining[item] = count - ordered
    shortfall = []
    for item, count in remaining.items():
        if count < minimum:
            shortfall.append((item, minimum - count))
    shortfall.sort(key=lambda pair: pair[1], reverse=True)
    requests = []
    for item, missing in shortfall:
        price = supplier.price(item)
        if price is None:
            continue
        batch = supplier.batch_size(item)
        batches = (missing + batch - 1) // batch
        requests.append({
            "item": item,
            "batches": batches,
            "units": batches * batch,
            "cost": round(batches * batch * price, 2),
        })
    total = sum(request["cost"] for request in requests)
    return requests, total
'''

TYPE_HINTS_LOG = '''\
def summarize_log(path, level, since, limit):
    """Counts the messages of one level in a log file, newest first, at most `limit` of them."""
    counts = {}
    first_seen = {}
    with open(path, encoding="utf-8") as log:
        for line in log:
            parts = line.rstrip("\\n").split(" ", 3)
            if len(parts) < 4:
                continue
            day, time, found_level, message = parts
            stamp = day + " " + time
            if found_level != level or stamp < since:
                continue
            counts[message] = counts.get(message, 0) + 1
            if message not in first_seen:
                first_seen[message] = stamp
    ordered = sorted(counts.items(), key=lambda pair: pair[1], reverse=True)
    lines = []
    for message, count in ordered[:limit]:
        lines.append(f"{count:6d}  {first_seen[message]}  {message}")
    if len(ordered) > limit:
        lines.append(f"... and {len(ordered) - limit} more")
    return "\\n".join(lines)
'''

RENAME_CART = '''\
"""A shopping cart with discounts."""

from dataclasses import dataclass, field


@dataclass
class Line:
    sku: str
    price: float
    qty: int


@dataclass
class Cart:
    lines: list = field(default_factory=list)
    discount: float = 0.0

    def add(self, sku, price, qty=1):
        for line in self.lines:
            if line.sku == sku:
                line.qty += qty
                return line
        line = Line(sku, price, qty)
        self.lines.append(line)
        return line

    def remove(self, sku):
        self.lines = [line for line in self.lines if line.sku != sku]

    def subtotal(self):
        total = 0.0
        for line in self.lines:
            total += line.price * line.qty
        return total

    def apply_discount(self, percent):
        if percent < 0 or percent > 100:
            raise ValueError("a discount is between 0 and 100 percent")
        self.discount = percent

    def total(self):
        subtotal = self.subtotal()
        return round(subtotal - subtotal * self.discount / 100, 2)


def cart_from_rows(rows):
    cart = Cart()
    for row in rows:
        sku, price, qty = row.split(",")
        cart.add(sku.strip(), float(price), int(qty))
    return cart


def describe(cart):
    parts = []
    for line in cart.lines:
        parts.append(f"{line.qty} x {line.sku} at {line.price:.2f}")
    parts.append(f"total {cart.total():.2f}")
    return "; ".join(parts)
'''

RENAME_QUEUE = '''\
import heapq
import time


class JobQueue:
    """Jobs run in order of priority, then of arrival."""

    def __init__(self):
        self.heap = []
        self.counter = 0
        self.done = []

    def push(self, job, priority=0):
        self.counter += 1
        heapq.heappush(self.heap, (-priority, self.counter, job))

    def pop(self):
        if not self.heap:
            return None
        _, _, job = heapq.heappop(self.heap)
        return job

    def __len__(self):
        return len(self.heap)

    def run_all(self, worker, budget):
        started = time.monotonic()
        while self.heap:
            if time.monotonic() - started > budget:
                break
            job = self.pop()
            try:
                result = worker(job)
            except Exception as error:
                result = error
            self.done.append((job, result))
        return len(self.done)

    def failures(self):
        return [job for job, result in self.done if isinstance(result, Exception)]

    def requeue_failures(self, priority=0):
        for job in self.failures():
            self.push(job, priority)
        self.done = [(job, result) for job, result in self.done
                     if not isinstance(result, Exception)]


def drain(queue, worker):
    results = []
    while len(queue):
        job = queue.pop()
        results.append(worker(job))
    return results


def fill(queue, jobs):
    for priority, job in jobs:
        queue.push(job, priority)
    return queue
'''

BUG_AVERAGE = '''\
def moving_average(values, window):
    """The average of each `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    averages = []
    total = 0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        if index >= window:
            averages.append(total / window)
    return averages


print(moving_average([1, 2, 3, 4, 5], 2))  # should print [1.5, 2.5, 3.5, 4.5]
'''

BUG_MERGE = '''\
def merge_sorted(left, right):
    """One sorted list from two sorted lists."""
    merged = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    return merged


def merge_all(lists):
    result = []
    for items in lists:
        result = merge_sorted(result, items)
    return result


print(merge_all([[1, 4, 9], [2, 3, 10], [5]]))  # should print [1, 2, 3, 4, 5, 9, 10]
'''


# What an editor or agent tells the model before an edit: the one system message of every code edit.
EDITOR_SYSTEM = ("You are a code editor. You are given code and an edit to make. Reply with the complete "
                 "edited code in one ```python code block, changing only what the edit asks, and nothing else.")


def fenced(instruction: str, code: str) -> str:
    return f"```python\n{code}```\n\n{instruction}"


# (name, user message)
CODE_EDITS = (
    ("type hints: restock", fenced("Rewrite this function with type hints. Answer with the whole "
                                   "function and nothing else.", TYPE_HINTS_INVENTORY)),
    ("type hints: summarize_log", fenced("Add type hints to this function. Return the complete "
                                         "function.", TYPE_HINTS_LOG)),
    ("rename: line -> item", fenced("Rename the variable `line` to `item` everywhere in this file. "
                                    "Answer with the whole file.", RENAME_CART)),
    ("rename: heap -> pending", fenced("Rename `heap` to `pending` throughout this file and give "
                                       "back the whole file.", RENAME_QUEUE)),
    ("fix: moving_average", fenced("Fix the bug in this snippet. Answer with the whole fixed "
                                   "snippet.", BUG_AVERAGE)),
    ("fix: merge_sorted", fenced("This code has a bug. Return the whole snippet with the bug "
                                 "fixed.", BUG_MERGE)),
)
