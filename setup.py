from setuptools import find_packages, setup

setup(
    name="cube",
    version="0.1.0",
    description="A container orchestrator built as an actor system over ZeroMQ",
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*", "bench"]),
    install_requires=[
        "pyzmq>=25",
        "msgpack>=1.0",
        "docker>=7.0",
        "psutil>=5.9",
        "plyvel>=1.5",
        "fire>=0.5",
        "numpy>=1.24",
        "rich>=13",
        "prometheus-client>=0.20",
        "etcd3gw>=2.4",  # the etcd store (docs/ha.md): etcd's gRPC gateway over HTTP, no gRPC stack
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6"]},
    entry_points={
        "console_scripts": [
            "cube=cube.cli.main:main",
            "cube-manager=cube.actors.supervisor:main",
            "cube-worker=cube.actors.worker:main",
        ]
    },
)
