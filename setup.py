"""
Packaging for meteord. The twistd drop-in under twisted/plugins/ is shipped as a data-less
module of the namespace-less `twisted.plugins` package, so it must be listed explicitly and
`twisted/` must never get an `__init__.py` of ours.
"""

from setuptools import setup

setup(
    name="meteord",
    version="0.1.0",
    description="One Twisted daemon for networks of meteor cameras (MeteorPi-compatible).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "meteord",
        "meteord.store",
        "meteord.web",
        "meteord.protocols",
        "meteord.exporter",
        "meteord.testing",
        "twisted.plugins",
    ],
    package_data={
        "meteord": ["default.toml"],
        "meteord.store": ["migrations/*/*.sql"],
    },
    install_requires=[
        # 26.10 checks a TLS hostname in the verify callback the exporter's pinning replaces.
        "twisted[tls] >= 26.10, < 27",
        # Named as well because the exporter's per-configuration TLS uses them directly.
        "cryptography >= 42, < 51",
        "pyOpenSSL >= 24.0, < 27",
        "service-identity >= 24.1, < 27",
        "klein >= 24.8, < 26",
        "treq >= 24.9, < 27",
        # Named as well because the exporter hands treq its URLs already parsed.
        "hyperlink >= 21.0, < 22",
        "txpostgres >= 1.7, < 2",
        "psycopg2-binary >= 2.9.9, < 3",
        "zope.interface >= 6.0, < 9",
        "attrs >= 23.2, < 27",
        "argon2-cffi >= 23.1, < 26",
        "prometheus-client >= 0.20, < 1",
        "multipart >= 1.2, < 3",
        "tqdm >= 4.66, < 5",
        # No wheels for armv6 (the first Raspberry Pis): the standard library's encoder is
        # used there instead.
        'orjson >= 3.10, < 4; platform_machine != "armv6l"',
    ],
    extras_require={
        "test": [
            "hypothesis >= 6.100, < 7",
        ],
    },
    entry_points={
        "console_scripts": [
            "meteord-config = meteord.config:main",
            "meteord-admin = meteord.admin:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
