# Purgatory objects: freestanding relocatable ELF (ld -r), linked at load time by kexecfw.purgatory.
# The built objects are committed as package data so users without a cross compiler can load.
COMMON      := kexecfw/purgatory
CFLAGS_BASE := -O2 -std=gnu11 -ffreestanding -fno-builtin -nostdlib -fno-stack-protector \
               -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-pic -fno-pie -Wall -Werror \
               -I$(COMMON)

ARM64_CC     ?= aarch64-linux-gnu-gcc
ARM64_LD     ?= aarch64-linux-gnu-ld
ARM64_CFLAGS := $(CFLAGS_BASE) -mgeneral-regs-only -mstrict-align -mcmodel=small
ARM64_SRC    := $(wildcard plugins/arm64/purgatory/*.S plugins/arm64/purgatory/*.c) $(wildcard $(COMMON)/*.c)

X86_64_CC     ?= gcc
X86_64_LD     ?= ld
X86_64_CFLAGS := $(CFLAGS_BASE) -m64 -mcmodel=large -mno-red-zone -mno-sse -mno-mmx -mno-avx
X86_64_SRC    := $(wildcard plugins/x86_64/purgatory/*.S plugins/x86_64/purgatory/*.c) $(wildcard $(COMMON)/*.c)

.PHONY: purgatory clean-purgatory
purgatory: plugins/arm64/purgatory/purgatory.ro plugins/x86_64/purgatory/purgatory.ro

plugins/arm64/purgatory/purgatory.ro: $(ARM64_SRC) $(wildcard $(COMMON)/*.h plugins/arm64/purgatory/*.h)
	@tmp=$$(mktemp -d) && for s in $(ARM64_SRC); do \
	  $(ARM64_CC) $(ARM64_CFLAGS) -c $$s -o $$tmp/$$(echo $$s | tr / _).o || exit 1; done && \
	$(ARM64_LD) -r -o $@ $$tmp/*.o && rm -rf $$tmp

plugins/x86_64/purgatory/purgatory.ro: $(X86_64_SRC) $(wildcard $(COMMON)/*.h plugins/x86_64/purgatory/*.h)
	@tmp=$$(mktemp -d) && for s in $(X86_64_SRC); do \
	  $(X86_64_CC) $(X86_64_CFLAGS) -c $$s -o $$tmp/$$(echo $$s | tr / _).o || exit 1; done && \
	$(X86_64_LD) -r -o $@ $$tmp/*.o && rm -rf $$tmp

clean-purgatory:
	rm -f plugins/*/purgatory/purgatory.ro
