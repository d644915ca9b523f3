# infergate: build, demo, tests, fuzzers and benchmarks.
# Every artifact lands in build/.

SHELL        := /bin/bash
PY           := /usr/bin/python3
BUILD        := build
NGX_SRC      := /usr/share/nginx/src
SANITIZE     ?= 0
FUZZ_SECONDS ?= 30
PORT         ?= 8080
JOBS         ?= $(shell nproc)

# lib/ (nginx-free) is compiled once into build/libig.a, which the module
# (config's IG_LIBIG), the CLIs and the unit tests link: the linker takes
# only the members each uses.  Its objects are position-independent and
# carry the module's hardening flags.  The fuzzers link
# build/fuzz/libig.a, the same sources built by clang with their
# instrumentation.
LIB_SRCS  := $(wildcard lib/*.c)
LIB_HDRS  := $(wildcard lib/*.h)
LIB_OBJS  := $(patsubst lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRCS))
LIBIG     := $(BUILD)/libig.a
FUZZ_LIB_OBJS := $(patsubst lib/%.c,$(BUILD)/fuzz/lib/%.o,$(LIB_SRCS))
FUZZ_LIBIG    := $(BUILD)/fuzz/libig.a
FUZZ_CFLAGS   := -g -O1 -fsanitize=address,undefined \
                 -fno-sanitize-recover=undefined -Ilib
LIB_CFLAGS = $(CFLAGS) -fPIC \
             $(filter -fstack-protector-strong -D_FORTIFY_SOURCE=2,$(NGX_CCOPT))
# every compile here writes its header dependencies next to its output
DEPFLAGS   = -MMD -MP -MF $@.d -MT $@
NGX_SRCS  := $(wildcard ngx_module/*.c ngx_module/*.h filters/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNITS     := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS   := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
LIBS      := -lyajl -lpcre2-8 -lcrypto -lxxhash -lm

# The backend: backend/*.c go into one archive that the daemon
# (backend/main.c), tools and tests link.  backend/*.cu (nvcc) make
# build/libinfergate-cuda.so, linked with cuBLAS and the CUDA runtime,
# which backend/cuda_loader.c dlopen()s only when a GPU is requested:
# nothing else links CUDA.  Without nvcc the library is not built and
# IG_NO_CUDA is defined.
CUDA_HOME    ?= /usr/local/cuda
NVCC         ?= $(firstword $(wildcard $(CUDA_HOME)/bin/nvcc) \
                            $(shell command -v nvcc 2>/dev/null))
BACKEND_MAIN := backend/main.c
BACKEND_C    := $(filter-out $(BACKEND_MAIN),$(wildcard backend/*.c))
BACKEND_H    := $(wildcard backend/*.h)
BACKEND_GEN  := $(BUILD)/backend/gen/onnx.pb-c.o
BACKEND_CFLAGS = $(CFLAGS) -Ibackend -I$(BUILD)/backend/gen -fopenmp \
                 -pthread
# lib/ (the audit signer of backend/baudit.c) after the archive
BACKEND_LIBS := $(LIBIG) -lopenblas -lprotobuf-c -fopenmp -pthread -lrt
BACKEND_LIBS += -ldl
ifneq ($(NVCC),)
BACKEND_CU   := $(wildcard backend/*.cu)
CUDA_SO      := $(BUILD)/libinfergate-cuda.so
CUDA_LIBS    := --cudart shared -L$(CUDA_HOME)/lib64 \
                -Xlinker -rpath=$(CUDA_HOME)/lib64 -lcublas
# hidden: the library's functions bind inside it, only ig_cuda_api is
# exported (backend/ig_cuda.h)
NVCC_FLAGS   := -O2 -g -std=c++17 -Ibackend -Ilib --compiler-options \
                -fPIC,-Wall,-fvisibility=hidden \
                -gencode arch=compute_80,code=sm_80 \
                -gencode arch=compute_90,code=sm_90 \
                -gencode arch=compute_90,code=compute_90
else
BACKEND_CU   :=
CUDA_SO      :=
BACKEND_CFLAGS += -DIG_NO_CUDA
endif
BACKEND_OBJS  = $(patsubst backend/%.c,$(BUILD)/backend/%.o,$(BACKEND_C)) \
                $(BACKEND_GEN)
CUDA_OBJS     = $(patsubst backend/%.cu,$(BUILD)/backend/%.cu.o,$(BACKEND_CU))
BACKEND_AR   := $(BUILD)/libigbackend.a
# whole archive: the loaders override ig_model.c's weak stubs, which an
# archive member would otherwise never be pulled in for; the registry
# uses lib/ (ig_modelcrypt, the key file parser), hence libig.a after it
BACKEND_LINK := -Wl,--whole-archive $(BACKEND_AR) -Wl,--no-whole-archive \
                $(LIBIG)

CFLAGS    := -std=gnu99 -O2 -g -Wall -Wextra -Werror -Ilib
NGX_CCOPT := -g -O2 -fPIC -fstack-protector-strong -Wformat \
             -Werror=format-security -D_FORTIFY_SOURCE=2
NGX_LDOPT := -Wl,-z,relro -Wl,-z,now -fPIC

ifeq ($(SANITIZE),1)
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
CFLAGS    := $(filter-out -O2,$(CFLAGS)) -O1 -Wno-format-truncation $(SAN)
NGX_CCOPT := $(filter-out -O2 -D_FORTIFY_SOURCE=2,$(NGX_CCOPT)) -O1 $(SAN)
NGX_LDOPT += $(SAN)
endif

MODULE    := $(BUILD)/ngx_http_infergate_module.so
TOOLS     := $(BUILD)/infergate-keys $(BUILD)/infergate-bloom \
             $(if $(wildcard tools/infergate_audit.c),$(BUILD)/infergate-audit) \
             $(BUILD)/infergate-predict $(BUILD)/infergate-models \
             $(BUILD)/infergate-backend $(BUILD)/infergate-ringbench \
             $(CUDA_SO)

export IG_BUILD    := $(CURDIR)/$(BUILD)
export IG_SANITIZE := $(SANITIZE)

.PHONY: all deps build module tools unit integration chaos test demo fuzz \
        bench \
        clean FORCE

all: build

deps:
	@bash scripts/deps.sh

build: deps module tools

module: $(MODULE)
tools: $(TOOLS)

# A change of flags (SANITIZE=1 or back) rebuilds everything.
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CFLAGS) | $(NGX_CCOPT) | $(NGX_LDOPT)' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else \
	    mv $@.new $@; rm -rf $(BUILD)/objs $(BUILD)/unit $(BUILD)/*.so \
	        $(BUILD)/backend $(BUILD)/*.a \
	        $(TOOLS); fi

# nginx's configure writes into its own tree, so run it on a private copy.
$(BUILD)/ngx-src/configure:
	@mkdir -p $(BUILD)
	rm -rf $(BUILD)/ngx-src
	cp -r $(NGX_SRC) $(BUILD)/ngx-src

# config lists sources by wildcard: a file added or removed reconfigures.
$(BUILD)/.srclist: FORCE
	@mkdir -p $(BUILD)
	@ls lib/*.[ch] ngx_module/*.[ch] filters/*.c > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

# gRPC: C for the module's .proto, generated by protoc-c (config adds the
# .c to the module; the gRPC fuzzer compiles it too)
GRPC_PROTO := ngx_module/ngx_http_infergate_grpc.proto
GRPC_GEN   := $(BUILD)/gen
GRPC_GEN_C := $(GRPC_GEN)/ngx_http_infergate_grpc.pb-c.c
$(GRPC_GEN_C) $(GRPC_GEN)/ngx_http_infergate_grpc.pb-c.h &: $(GRPC_PROTO)
	@mkdir -p $(GRPC_GEN)
	protoc-c -Ingx_module --c_out=$(GRPC_GEN) $(GRPC_PROTO)

$(BUILD)/objs/Makefile: config $(BUILD)/.flags $(BUILD)/.srclist \
                        $(BUILD)/ngx-src/configure $(GRPC_GEN_C)
	cd $(BUILD)/ngx-src && . ./conf_flags && \
	    IG_LIBIG=$(CURDIR)/$(LIBIG) IG_GRPC_GEN=$(CURDIR)/$(GRPC_GEN) \
	    ./configure --with-compat \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt='$(NGX_CCOPT)' --with-ld-opt='$(NGX_LDOPT)' \
	    --add-dynamic-module=$(CURDIR) \
	    --builddir=$(CURDIR)/$(BUILD)/objs > $(CURDIR)/$(BUILD)/configure.log

$(MODULE): $(BUILD)/objs/Makefile $(LIBIG) $(LIB_HDRS) $(NGX_SRCS) \
           $(GRPC_GEN_C)
	$(MAKE) -s -j$(JOBS) -f $(CURDIR)/$(BUILD)/objs/Makefile \
	    -C $(BUILD)/ngx-src modules
	# a new inode: a running nginx keeps the old file mapped
	cp $(BUILD)/objs/ngx_http_infergate_module.so $@.tmp
	@# the audit verifier stays out of the module (config, IG_LIBIG)
	@! nm $@.tmp | grep -E ' ig_(audit_verify|av)_' \
	    || { echo "$@: the audit verifier is linked in" >&2; \
	         rm -f $@.tmp; exit 1; }
	mv -f $@.tmp $@

$(BUILD)/lib/%.o: lib/%.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(LIBIG): $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/infergate-keys: tools/infergate_keys.c $(LIBIG) $(BUILD)/.flags
	$(CC) $(CFLAGS) $(DEPFLAGS) -o $@ tools/infergate_keys.c $(LIBIG) \
	    -lcrypto

$(BUILD)/infergate-audit: tools/infergate_audit.c $(LIBIG) $(BUILD)/.flags
	$(CC) $(CFLAGS) $(DEPFLAGS) -o $@ tools/infergate_audit.c $(LIBIG) \
	    $(LIBS)

$(BUILD)/infergate-bloom: tools/infergate_bloom.c $(LIBIG) $(BUILD)/.flags
	$(CC) $(CFLAGS) $(DEPFLAGS) -o $@ tools/infergate_bloom.c $(LIBIG) \
	    -lxxhash -lm

$(BUILD)/backend/%.o: backend/%.c $(BACKEND_H) $(LIB_HDRS) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(BACKEND_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(BUILD)/backend/%.cu.o: backend/%.cu $(BACKEND_H) $(LIB_HDRS) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) $(DEPFLAGS) -c -o $@ $<

# ONNX: C for the ModelProto, generated by protoc-c from libonnx-dev.
ONNX_PROTO   := /usr/include/onnx/onnx.proto
$(BUILD)/backend/gen/onnx.pb-c.c $(BUILD)/backend/gen/onnx.pb-c.h &: \
        $(ONNX_PROTO) $(BUILD)/.flags
	@mkdir -p $(BUILD)/backend/gen
	protoc-c -I$(dir $(ONNX_PROTO)) --c_out=$(BUILD)/backend/gen $(ONNX_PROTO)

$(BUILD)/backend/gen/onnx.pb-c.o: $(BUILD)/backend/gen/onnx.pb-c.c
	$(CC) $(BACKEND_CFLAGS) -c -o $@ $<

$(BUILD)/backend/model_onnx.o: $(BUILD)/backend/gen/onnx.pb-c.h

# the ONNX fuzzer includes the loader and the generated code
$(BUILD)/fuzz/fuzz_onnx: tests/fuzz/fuzz_onnx.c backend/model_onnx.c \
                         backend/mlp_cpu.c \
                         $(BACKEND_H) $(BUILD)/backend/gen/onnx.pb-c.c
	@mkdir -p $(BUILD)/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -Ilib -I$(BUILD)/backend/gen \
	    $(DEPFLAGS) -o $@ $< -lprotobuf-c -lopenblas -lm

$(BACKEND_AR): $(BACKEND_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# a new inode: a running backend keeps the old file mapped
$(CUDA_SO): $(CUDA_OBJS)
	$(NVCC) -shared -o $@.tmp $^ $(CUDA_LIBS)
	mv -f $@.tmp $@

$(BUILD)/infergate-predict: tools/infergate_predict.c $(BACKEND_AR) \
                            $(LIBIG) $(BACKEND_H)
	$(CC) $(BACKEND_CFLAGS) $(DEPFLAGS) -o $@ tools/infergate_predict.c \
	    $(BACKEND_LINK) $(BACKEND_LIBS) $(LIBS)

$(BUILD)/infergate-backend: $(BACKEND_MAIN) $(BACKEND_AR) $(LIBIG) \
                            $(BACKEND_H) $(LIB_HDRS)
	$(CC) $(BACKEND_CFLAGS) $(DEPFLAGS) -o $@ $(BACKEND_MAIN) \
	    $(BACKEND_LINK) $(BACKEND_LIBS) $(LIBS)

# signed and encrypted model files (lib/ig_modelcrypt.c)
$(BUILD)/infergate-models: tools/infergate_models.c $(LIBIG) $(BUILD)/.flags
	$(CC) $(CFLAGS) $(DEPFLAGS) -o $@ tools/infergate_models.c $(LIBIG) \
	    -lcrypto

$(BUILD)/infergate-ringbench: tools/infergate_ringbench.c $(LIB_HDRS) \
                              $(BUILD)/.flags
	$(CC) $(CFLAGS) -Ibackend $(DEPFLAGS) -o $@ tools/infergate_ringbench.c \
	    -lm

# the ring fuzzer links only the backend's consumer, built by clang
$(BUILD)/fuzz/fuzz_ring: tests/fuzz/fuzz_ring.c backend/ring_queue.c \
                         backend/ring_queue.h $(LIB_HDRS)
	@mkdir -p $(BUILD)/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -DIG_NO_CUDA -Ilib -Ibackend \
	    $(DEPFLAGS) -o $@ $< backend/ring_queue.c

# the gRPC fuzzer compiles the codec and the generated code
$(BUILD)/fuzz/fuzz_grpc: tests/fuzz/fuzz_grpc.c \
                         ngx_module/ngx_http_infergate_grpc_codec.c \
                         ngx_module/ngx_http_infergate_grpc_codec.h \
                         $(GRPC_GEN_C) $(LIB_HDRS)
	@mkdir -p $(BUILD)/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -Ilib -Ingx_module -I$(GRPC_GEN) \
	    $(DEPFLAGS) -o $@ $< ngx_module/ngx_http_infergate_grpc_codec.c \
	    $(GRPC_GEN_C) -lprotobuf-c -lz -lm

# XGBoost predictor vs libxgboost (libxgboost-dev) on a 500-tree depth-8
# model made once by a fixed-seed script: `make bench-xgb`
$(BUILD)/bench-xgb: bench/bench_xgb.c $(BACKEND_AR) $(BACKEND_H) $(LIB_HDRS) \
                   $(LIBIG)
	$(CC) $(BACKEND_CFLAGS) -o $@ bench/bench_xgb.c $(BACKEND_LINK) \
	    $(BACKEND_LIBS) $(LIBS) -lxgboost

$(BUILD)/bench-xgb-model.json: bench/bench_xgb_model.py
	@mkdir -p $(BUILD)
	$(PY) bench/bench_xgb_model.py $@

.PHONY: bench-xgb
bench-xgb: $(BUILD)/bench-xgb $(BUILD)/bench-xgb-model.json
	$(BUILD)/bench-xgb --threads $(JOBS) $(BUILD)/bench-xgb-model.json

$(BUILD)/unit/%: tests/unit/%.c $(LIBIG) $(BUILD)/.flags
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS) $(DEPFLAGS) -o $@ $< $(LIBIG) -lcmocka $(LIBS)

# the gRPC codec's unit test compiles the codec and the generated code
$(BUILD)/unit/test_grpc_codec: tests/unit/test_grpc_codec.c \
        ngx_module/ngx_http_infergate_grpc_codec.c \
        ngx_module/ngx_http_infergate_grpc_codec.h $(GRPC_GEN_C) \
        $(BUILD)/.flags
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS) -Ingx_module -I$(GRPC_GEN) $(DEPFLAGS) -o $@ $< \
	    ngx_module/ngx_http_infergate_grpc_codec.c $(GRPC_GEN_C) -lcmocka \
	    -lprotobuf-c -lz -lm

# the CPU executor's unit test links it with OpenBLAS and OpenMP
$(BUILD)/unit/test_mlp_cpu: tests/unit/test_mlp_cpu.c backend/mlp_cpu.c \
        $(BACKEND_H) $(BUILD)/.flags
	@mkdir -p $(BUILD)/unit
	$(CC) $(BACKEND_CFLAGS) $(DEPFLAGS) -o $@ $< backend/mlp_cpu.c \
	    -lcmocka -lopenblas -lm

unit: deps $(UNITS)
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

# Integration and chaos tests run on TEST_JOBS pytest-xdist workers (one
# per CPU, at most 4): every fixture takes its own free ports and its own
# directory.  TEST_JOBS=1 runs them in one process.
TEST_JOBS    ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)
XDIST        := $(if $(filter-out 0 1,$(TEST_JOBS)),-n $(TEST_JOBS))

integration: build
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) -m "not chaos" \
	    tests/integration

# Things break on purpose under load: reloads, a full disk, slow clients,
# Redis and the backend killed and restarted.
chaos: build
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) -m chaos \
	    tests/integration

# python3 reference implementations (xgboost, torch) against the backend
.PHONY: oracle
oracle: build
	$(PY) -m pytest -q -p no:cacheprovider tests/oracle

test: build unit integration oracle

demo: build
	@PORT=$(PORT) bash scripts/demo.sh

$(BUILD)/fuzz/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(DEPFLAGS) -c -o $@ $<

$(FUZZ_LIBIG): $(FUZZ_LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIBIG)
	@mkdir -p $(BUILD)/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $(DEPFLAGS) -o $@ $< \
	    $(FUZZ_LIBIG) $(LIBS)

# Each fuzzer runs FUZZ_SECONDS on a scratch copy of its seed corpus, as
# many at once as there are CPUs.
fuzz: deps $(FUZZERS)
	@$(MAKE) -s -j$(JOBS) $(patsubst tests/fuzz/fuzz_%.c,fuzz-run-%,$(FUZZ_SRCS))

fuzz-run-%: $(BUILD)/fuzz/fuzz_%
	@c=tests/fuzz/corpus/$*; w=$(BUILD)/fuzz/work-$*; \
	    rm -rf $$w; mkdir -p $$w; [ -d $$c ] && cp -r $$c/. $$w/; \
	    $< -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	        -artifact_prefix=$(BUILD)/fuzz/fuzz_$*- $$w \
	        2>$(BUILD)/fuzz/fuzz_$*.log \
	    || { echo "== fuzz_$* FAILED"; tail -50 $(BUILD)/fuzz/fuzz_$*.log; \
	         exit 1; }; \
	    echo "== fuzz_$* $(FUZZ_SECONDS)s: $$(grep -E '^#[0-9]+.*DONE' \
	        $(BUILD)/fuzz/fuzz_$*.log | tail -1)"

# infergate against plain nginx and an OpenResty Lua gateway, the backend
# against libxgboost and torch; prints tables, writes build/bench/.
bench: build
	@$(PY) bench/bench.py | tee $(BUILD)/bench.md

clean:
	rm -rf $(BUILD)

# the header dependencies the compiles above wrote (-MMD)
-include $(wildcard $(BUILD)/*.d $(BUILD)/lib/*.d $(BUILD)/unit/*.d \
                    $(BUILD)/backend/*.d $(BUILD)/fuzz/*.d \
                    $(BUILD)/fuzz/lib/*.d)

FORCE:

# docs/architecture.svg from docs/architecture.dot (Debian's graphviz);
# not part of "make test": the svg is committed.
docs: docs/architecture.svg

docs/architecture.svg: docs/architecture.dot
	@command -v dot >/dev/null 2>&1 || { echo "make docs: 'dot' not" \
	    "found; install Graphviz (apt-get install graphviz)" >&2; exit 1; }
	dot -Tsvg $< -o $@.tmp && mv $@.tmp $@

.PHONY: docs
