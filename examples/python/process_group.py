"""A ProcessGroup from Python: Python callables and an executable as one
group, results through a channel, an exception reported back.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/process_group.py
    build/bin/dragon-orchestrate run --launcher virtual --nodes 2 -- \
        env PYTHONPATH=build/python /usr/bin/python3 examples/python/process_group.py
"""
import os

import dragon
from dragon.channels import Channel
from dragon.native.process import Popen, ProcessTemplate
from dragon.native.process_group import ProcessGroup


def square(results, x):
    results.send(f"{x}^2 = {x * x} (rank {os.environ['DRAGON_RANK']} on node {os.environ['DRAGON_NODE_ID']})".encode())


def broken():
    raise RuntimeError("this member fails on purpose")


def main():
    results = Channel(capacity=64)
    with ProcessGroup() as pg:
        for x in range(6):
            pg.add_process(1, ProcessTemplate(square, args=(results, x)))
        pg.add_process(1, ProcessTemplate("hostname", stdout=Popen.PIPE))
        pg.start()
        pg.join()
        for _ in range(6):
            print(results.recv(timeout=10).decode())
        print("hostname said:", pg.read_output(6, "out").decode().strip())
        print("exit status:", pg.exit_status)

    with ProcessGroup() as pg:
        pg.add_process(1, ProcessTemplate(broken, stderr=Popen.DEVNULL))
        pg.start()
        try:
            pg.join()
        except dragon.DragonUserCodeError as e:
            exc = e.exceptions[0]
            print(f"caught from rank {exc.rank}: {exc.type_name}: {exc.message}")


if __name__ == "__main__":
    main()
