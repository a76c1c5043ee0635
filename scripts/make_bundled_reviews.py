"""Generates trainer/data/bundled/reviews.csv, the bundled text-classification data.

Short product and restaurant reviews labelled positive/negative. The labels
depend on word order (negation, "but" clauses, intensifiers), so a bag of words
cannot solve them and a recurrent model has something to learn. Deterministic:
the same seed always writes the same file.

    python scripts/make_bundled_reviews.py [--rows 8000] [--seed 7] [--out PATH]
"""

import argparse
import csv
import os
import random

SUBJECTS = {
    "restaurant": ["the food", "the pasta", "the soup", "the service", "the waiter", "the dessert",
                   "the coffee", "the pizza", "the menu", "the staff", "the place", "the steak"],
    "electronics": ["the battery", "the screen", "the camera", "the speaker", "the keyboard",
                    "the charger", "this phone", "this laptop", "the headphones", "the app",
                    "the display", "the sound"],
    "hotel": ["the room", "the bed", "the shower", "the breakfast", "the view", "the lobby",
              "the pool", "the location", "the reception", "the wifi"],
    "books": ["the plot", "the ending", "the characters", "the writing", "this novel",
              "the story", "the dialogue", "the translation"],
}
POS = ["good", "great", "excellent", "amazing", "fantastic", "delicious", "comfortable", "fast",
       "reliable", "lovely", "clean", "friendly", "brilliant", "solid", "impressive", "perfect"]
NEG = ["bad", "terrible", "awful", "horrible", "slow", "broken", "dirty", "rude", "boring",
       "disappointing", "noisy", "cheap", "useless", "mediocre", "bland", "unreliable"]
INTENS = ["", "", "", "really ", "very ", "quite ", "extremely ", "pretty ", "truly "]
OPENERS = ["", "", "", "honestly ", "overall ", "well ", "to be fair ", "i think ", "sadly ",
           "surprisingly "]
FILLER = ["", "", "", " to be honest", " i must say", " this time", " as expected",
          " for the price", " if you ask me", " in my opinion"]
NEGATORS = ["not", "never", "hardly", "not at all"]


def clause(rng, sentiment: int) -> str:
    domain = rng.choice(list(SUBJECTS))
    subj = rng.choice(SUBJECTS[domain])
    verb = rng.choice(["was", "is", "seemed", "felt"])
    negate = rng.random() < 0.35
    word_sent = 1 - sentiment if negate else sentiment
    adj = rng.choice(POS if word_sent else NEG)
    if negate:
        neg = rng.choice(NEGATORS)
        if neg == "not at all":
            return f"{subj} {verb} {adj} not at all" if rng.random() < 0.5 else f"{subj} {verb} not {adj} at all"
        return f"{subj} {verb} {neg} {rng.choice(INTENS)}{adj}"
    return f"{subj} {verb} {rng.choice(INTENS)}{adj}"


def review(rng) -> tuple[str, str]:
    label = rng.randint(0, 1)
    form = rng.random()
    if form < 0.4:
        text = clause(rng, label)
    elif form < 0.75:
        # "X but Y": the clause after "but" decides.
        text = f"{clause(rng, 1 - label)} but {clause(rng, label)}"
    elif form < 0.9:
        text = f"{clause(rng, label)} and {clause(rng, label)}"
    else:
        text = f"although {clause(rng, 1 - label)} {clause(rng, label)}"
    text = f"{rng.choice(OPENERS)}{text}{rng.choice(FILLER)}"
    if rng.random() < 0.3:
        text += rng.choice([".", "!", "!!", "..."])
    if rng.random() < 0.03:  # label noise, as in any real dataset
        label = 1 - label
    return text, ["negative", "positive"][label]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "trainer", "data", "bundled", "reviews.csv")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=8000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=default_out)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(args.rows):
            w.writerow(review(rng))
    print(f"wrote {args.rows} rows to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
