import random


def gen(n, seed=1):
    rnd = random.Random(seed)
    out = [
        'flow "big" {\n  timezone = "Europe/Lisbon"\n  retry { attempts = 3  backoff = exponential(10s, 5m) }\n  timeout = 30m\n}',
        'broker "main" { kind = "embedded" }',
        'pool "db" { slots = 4 }',
    ]
    for t in range(20):
        out.append(f'topic "t{t}" {{ partitions = 6 }}')
    for i in range(n):
        lines = [f'job "j{i}" {{']
        if i < 10 or rnd.random() < 0.05:
            lines.append(f'  schedule = cron("{rnd.randrange(60)} {rnd.randrange(24)} * * *")')
        if rnd.random() < 0.7:
            lines.append(f'  run = "pipeline.tasks:step_{i % 50}"')
        else:
            lines.append(f'  command = ["python", "-m", "pipeline.step", "--part={i}"]')
        if i >= 10:
            deps = sorted({rnd.randrange(max(0, i - 200), i) for _ in range(rnd.randint(1, 3))})
            lines.append("  after = [" + ", ".join(f"job.j{d}" for d in deps) + "]")
        if rnd.random() < 0.2:
            lines.append("  pool = pool.db")
        if rnd.random() < 0.1:
            lines.append("  retry { attempts = 5 }")
        if rnd.random() < 0.05:
            lines.append(f"  publishes = topic.t{rnd.randrange(20)}")
        lines.append("}")
        out.append("\n".join(lines))
    for t in range(20):
        out.append(
            f'consumer "c{t}" {{\n  consumes = topic.t{t}\n  run = "pipeline.consume:handle"\n  scale {{ max = 6  lag_per_instance = 500 }}\n}}'
        )
    return "\n".join(out) + "\n"
