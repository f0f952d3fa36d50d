rule summarize_provenance:
    input:
        table="results/tables/{table}.csv",
    output:
        report(
            "results/tables/{table}.provenance.html",
            caption="../docs/report/provenance.rst",
            category="Provenance",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/summarize_provenance/{table}.log",
    conda:
        CONDA_ENV
    params:
        rule="summarize_provenance",
        code=code_hash("report"),
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.report --table {input.table} --out {output} > {log} 2>&1"
