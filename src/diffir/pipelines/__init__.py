"""diffir.pipelines"""
