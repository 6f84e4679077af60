/*
 * intercept.c - point the main program's calls to one library function at
 * a replacement.
 *
 * A server decides to end a child in many places (signal handlers, control
 * FIFO commands, touch files, scaling, rolling reloads), and only some of
 * them have a hook; all of them end in one call to a library function such
 * as kill().  The executable makes that call through its own GOT entry for
 * the function (a JUMP_SLOT relocation, or a GLOB_DAT one when it was built
 * with -fno-plt), so replacing that entry sees every such call before it
 * happens, in the calling thread, with the caller's state intact.  Only the
 * main program's entries change: shared objects (a dlopen()ed plugin among
 * them) keep calling the library directly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "forksafe_internal.h"

#if defined(__x86_64__)
#define CALL_SLOT R_X86_64_JUMP_SLOT
#define DATA_SLOT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define CALL_SLOT R_AARCH64_JUMP_SLOT
#define DATA_SLOT R_AARCH64_GLOB_DAT
#elif defined(__i386__)
#define CALL_SLOT R_386_JMP_SLOT
#define DATA_SLOT R_386_GLOB_DAT
#elif defined(__arm__)
#define CALL_SLOT R_ARM_JUMP_SLOT
#define DATA_SLOT R_ARM_GLOB_DAT
#endif

#if __WORDSIZE == 64
#define RELOCATION_SYMBOL(info) ELF64_R_SYM(info)
#define RELOCATION_TYPE(info)   ELF64_R_TYPE(info)
#else
#define RELOCATION_SYMBOL(info) ELF32_R_SYM(info)
#define RELOCATION_TYPE(info)   ELF32_R_TYPE(info)
#endif

struct main_program {
    ElfW(Addr) base;
    const ElfW(Phdr) * headers;
    ElfW(Half) header_count;
};

static int take_first_object(struct dl_phdr_info *info, size_t size, void *data)
{
    struct main_program *program = data;

    (void)size;
    program->base = info->dlpi_addr;
    program->headers = info->dlpi_phdr;
    program->header_count = info->dlpi_phnum;
    return 1; /* the main program is listed first */
}

/* The dynamic loader rewrites the address entries of a writable dynamic
 * section in place (glibc, on most architectures); where the section is
 * read-only they stay offsets from the load base.  A non-PIE program loads
 * at 0, where both readings agree. */
static uintptr_t dynamic_address(ElfW(Addr) base, ElfW(Addr) value)
{
    return value >= base ? (uintptr_t)value : (uintptr_t)(base + value);
}

struct relocations {
    uintptr_t table;
    size_t size;
    int with_addend;
};

struct dynamic_tables {
    const ElfW(Sym) * symbols;
    const char *strings;
    size_t strings_size;
    struct relocations lists[3]; /* PLT, RELA, REL */
    uintptr_t relro_start, relro_end;
};

static int read_dynamic(const struct main_program *program, struct dynamic_tables *tables)
{
    const ElfW(Dyn) *dynamic = NULL;
    int plt_with_addend = 1;
    ElfW(Half) i;

    memset(tables, 0, sizeof(*tables));
    for (i = 0; i < program->header_count; i++) {
        const ElfW(Phdr) *header = &program->headers[i];
        if (header->p_type == PT_DYNAMIC)
            dynamic = (const ElfW(Dyn) *)(program->base + header->p_vaddr);
        else if (header->p_type == PT_GNU_RELRO) {
            tables->relro_start = program->base + header->p_vaddr;
            tables->relro_end = tables->relro_start + header->p_memsz;
        }
    }
    if (!dynamic)
        return FORKSAFE__ENOTFOUND;
    for (; dynamic->d_tag != DT_NULL; dynamic++) {
        ElfW(Addr) value = dynamic->d_un.d_ptr;
        switch (dynamic->d_tag) {
        case DT_SYMTAB:
            tables->symbols = (const ElfW(Sym) *)dynamic_address(program->base, value);
            break;
        case DT_STRTAB:
            tables->strings = (const char *)dynamic_address(program->base, value);
            break;
        case DT_STRSZ:
            tables->strings_size = dynamic->d_un.d_val;
            break;
        case DT_JMPREL:
            tables->lists[0].table = dynamic_address(program->base, value);
            break;
        case DT_PLTRELSZ:
            tables->lists[0].size = dynamic->d_un.d_val;
            break;
        case DT_PLTREL:
            plt_with_addend = dynamic->d_un.d_val == DT_RELA;
            break;
        case DT_RELA:
            tables->lists[1].table = dynamic_address(program->base, value);
            break;
        case DT_RELASZ:
            tables->lists[1].size = dynamic->d_un.d_val;
            break;
        case DT_REL:
            tables->lists[2].table = dynamic_address(program->base, value);
            break;
        case DT_RELSZ:
            tables->lists[2].size = dynamic->d_un.d_val;
            break;
        default:
            break;
        }
    }
    tables->lists[0].with_addend = plt_with_addend;
    tables->lists[1].with_addend = 1;
    tables->lists[2].with_addend = 0;
    return tables->symbols && tables->strings ? 0 : FORKSAFE__ENOTFOUND;
}

/* A RELRO page is read-only once the loader is done with it (always with
 * BIND_NOW): it is opened for the one store and closed again. */
static int store_slot(const struct dynamic_tables *tables, void **slot, void *replacement)
{
    uintptr_t address = (uintptr_t)slot;
    long page_size = sysconf(_SC_PAGESIZE);
    void *page;

    if (address < tables->relro_start || address >= tables->relro_end) {
        __atomic_store_n(slot, replacement, __ATOMIC_SEQ_CST);
        return 0;
    }
    page = (void *)(address & ~((uintptr_t)page_size - 1));
    if (mprotect(page, (size_t)page_size, PROT_READ | PROT_WRITE) != 0)
        return FORKSAFE__EIO;
    __atomic_store_n(slot, replacement, __ATOMIC_SEQ_CST);
    mprotect(page, (size_t)page_size, PROT_READ);
    return 0;
}

int forksafe__intercept_call(const char *symbol, void *replacement)
{
#ifdef CALL_SLOT
    struct main_program program = {0, NULL, 0};
    struct dynamic_tables tables;
    size_t list;
    int replaced = 0, rc;

    dl_iterate_phdr(take_first_object, &program);
    if (!program.headers)
        return FORKSAFE__ENOTFOUND;
    if ((rc = read_dynamic(&program, &tables)) != 0)
        return rc;
    for (list = 0; list < 3; list++) {
        const struct relocations *relocations = &tables.lists[list];
        size_t entry_size = relocations->with_addend ? sizeof(ElfW(Rela)) : sizeof(ElfW(Rel));
        size_t offset;

        if (!relocations->table)
            continue;
        for (offset = 0; offset + entry_size <= relocations->size; offset += entry_size) {
            /* ElfW(Rel) is the head of ElfW(Rela): offset and info first. */
            const ElfW(Rel) *relocation = (const ElfW(Rel) *)(relocations->table + offset);
            size_t type = RELOCATION_TYPE(relocation->r_info);
            size_t name;

            if (type != CALL_SLOT && type != DATA_SLOT)
                continue;
            name = tables.symbols[RELOCATION_SYMBOL(relocation->r_info)].st_name;
            if (tables.strings_size && name >= tables.strings_size)
                continue;
            if (strcmp(tables.strings + name, symbol) != 0)
                continue;
            if ((rc = store_slot(&tables, (void **)(program.base + relocation->r_offset),
                                 replacement)) != 0)
                return rc;
            replaced++;
        }
    }
    return replaced;
#else
    (void)symbol;
    (void)replacement;
    return FORKSAFE__ENOTFOUND;
#endif
}
