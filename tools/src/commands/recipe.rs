//! `srmae recipe`: the shipped presets, and any recipe resolved (defaults
//! filled in, overrides applied) as a run would use it.

use anyhow::Result;
use clap::{Args, Subcommand};
use srmae_train::recipe::{Recipe, PRESETS};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae recipe list
  srmae recipe show fmnist-simmim-pretrain
  srmae recipe show fmnist-pretrain --set model.method=\\\"mae\\\"   # what --method mae runs
  srmae recipe show my-recipe.toml --set optim.epochs=10")]
pub struct RecipeArgs {
    #[command(subcommand)]
    pub command: RecipeCommand,
}

#[derive(Subcommand)]
pub enum RecipeCommand {
    /// The presets `--recipe NAME` accepts, with their first comment line.
    List,
    /// A preset or TOML file, resolved: every default written out, the
    /// pretraining mask as the method will run it.
    Show {
        /// A preset name or a TOML file.
        name: String,
        /// Override a recipe value (repeatable), as for pretrain/finetune.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

pub fn run(a: RecipeArgs) -> Result<()> {
    match a.command {
        RecipeCommand::List => {
            let width = PRESETS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, text) in PRESETS {
                let about = text.lines().next().unwrap_or("").trim_start_matches('#').trim();
                println!("{name:width$}  {about}");
            }
        }
        RecipeCommand::Show { name, overrides } => {
            let mut recipe = Recipe::load(&name, &overrides)?;
            if recipe.model.encoder.is_some() && recipe.model.mask.is_some() {
                recipe.model.mask = Some(recipe.mask()?);
            }
            print!("{}", recipe.to_toml());
        }
    }
    Ok(())
}
