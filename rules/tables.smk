rule collect_table:
    input:
        table_metrics,
    output:
        csv="results/tables/{table}.csv",
        markdown="results/tables/{table}.md",
        html=report(
            "results/tables/{table}.html",
            caption="../docs/report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        "results/logs/collect_table/{table}.log",
    conda:
        CONDA_ENV
    params:
        rule="collect_table",
        code=code_hash("tables"),
        cells=table_cells_json,
        source=table_source,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.tables collect --table {wildcards.table} --cells {params.cells:q}"
        " --source {params.source} --metrics {input} --out {output.csv}"
        " --markdown {output.markdown} --html {output.html} > {log} 2>&1"


# No inputs on purpose: a researcher mid-way asks for the cells built so far without building
# the rest (docs/provenance.md, "Tables and report"); `built` re-runs it when a cell file appears or changes.
rule partial_table:
    output:
        "results/tables/{table}.partial.md",
    log:
        "results/logs/partial_table/{table}.log",
    conda:
        CONDA_ENV
    params:
        rule="partial_table",
        code=code_hash("tables"),
        cells=table_cells_json,
        source=table_source,
        built=built_cell_files,
    shell:
        "REALFAKE_RULE={params.rule} python -m realfake.tables partial --table {wildcards.table} --cells {params.cells:q}"
        " --source {params.source} --markdown {output} > {log} 2>&1"
