"""`p95 tap`: read topics like kcat, aware of our messages.

plan.py         which topics and partitions, and the offsets to start and stop at
positions.py    --from / --until: parsing, and the offset-for-time lookup (with its check)
source.py       reading assigned partitions (confluent-kafka when installed, else aiokafka)
decode.py       Avro / JSON / undecodable -> (schema, value, error)
filters.py      --key --symbol --signal --header --where
expressions.py  the --where language
output.py       json / pretty / raw, --fields
encoding.py     JSON lines (orjson when installed, else the standard library)
render.py       filter + decode + format a batch
loop.py         the read loop
run.py          a read: in this process, or split over processes
parallel.py     a large read split by partition over processes
trace.py        --trace: where is my signal?
"""
