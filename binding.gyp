{
  "targets": [
    {
      "target_name": "gqa2mla",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native').filter(f => f.endsWith('.cc')).map(f => 'native/' + f).join(' ')\")"],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")", "native", "/usr/include/openblas"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "GQA2MLA_BLAS_OPENBLAS=1"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "libraries": ["<!@(node scripts/blas-link.cjs)"],
      "ldflags": ["-Wl,-rpath,'$$ORIGIN'"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      }
    }
  ]
}
