"""A stand-in for `ms_keras.train` in the study-runner tests: records that it
ran, waits while `<model_dir>/../slow` exists, writes metrics.json."""

import json
import os
import sys
import time


def main(argv):
    values = dict(arg[2:].split("=", 1) for arg in argv
                  if arg.startswith("--") and "=" in arg)
    model_dir = values["model_dir"]
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "invocations"), "a") as f:
        f.write("ran\n")
    if values.get("fail") == "1":
        sys.exit(3)
    while os.path.exists(os.path.join(os.path.dirname(model_dir), "slow")):
        time.sleep(0.2)
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump({"seed": int(values["seed"]),
                   "from": values.get("from_dir")}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
