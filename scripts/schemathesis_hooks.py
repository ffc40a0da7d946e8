"""schemathesis hooks for scripts/api-contract.sh.

YAML request bodies are written so that YAML 1.2 (what Flotilla's parser, serde_yaml_ng, reads)
and YAML 1.1 (what PyYAML writes) agree on every scalar's type: every string is quoted. Without
it, PyYAML writes the string "1e100" unquoted, which YAML 1.2 reads as a number, and the contract
check would blame the server for refusing a number where the schema says string.
"""

import schemathesis
import yaml
from schemathesis.core import media_types


class _QuotingDumper(yaml.SafeDumper):
    pass


def _quoted(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')


_QuotingDumper.add_representer(str, _quoted)


@schemathesis.serializer(*media_types.YAML_MEDIA_TYPES)
def _yaml(ctx, value):
    if isinstance(value, bytes):
        return value
    return yaml.dump(value, Dumper=_QuotingDumper, allow_unicode=True).encode("utf-8")


@schemathesis.deserializer(*media_types.YAML_MEDIA_TYPES)
def _yaml_stream(ctx, response):
    """`GET /api/v1/export` answers a YAML stream (one document per config, `---` between them);
    the built-in deserializer takes only one document. A stream reads as the list of its
    documents."""
    docs = list(yaml.safe_load_all(response.content.decode("utf-8")))
    return docs[0] if len(docs) == 1 else docs
